"""Upkeep of the lake's Delta tables: rows of unfinished publications, compaction, vacuum.

See :mod:`spikelab.io.delta_lake` for the layout and for publishing.
"""

from __future__ import annotations

import math
import time
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spikelab.io.delta_lake import LakeWriter, publication_age_seconds
from spikelab.io.delta_tables import (
    DEFAULT_RETENTION_HOURS,
    KEY_COLUMNS,
    MAX_ATTEMPTS,
    PUBLISHED_TABLES,
    AssetKey,
    column_names,
    legacy_predicate,
    open_table,
    publications_predicate,
    quote,
    retrying,
)
from spikelab.io.lake import UNITS_TABLE, Lake, LakeLike

if TYPE_CHECKING:
    from deltalake import DeltaTable

# A publication id starts with its creation time (ms since the epoch), so rows no assets
# row names can be told from a publication still going on: those go after an hour.
UNPUBLISHED_AFTER_SECONDS = 3600.0


def remove_unpublished(
    lake_root: LakeLike,
    *,
    older_than_seconds: float = UNPUBLISHED_AFTER_SECONDS,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Delete rows that no assets row names (units, sessions); how many units publications.

    Such rows are a killed writer's (between its units and assets commits), a refused
    publication's, or a replaced publication whose deletion did not happen. Publications
    younger than ``older_than_seconds`` may still be going on and are kept. Rows written
    before publication ids existed go once their asset's row names a publication.

    A publication id starts with its creation time (13 digits of ms), so the old ones are
    those below the cutoff as text: the files whose statistics say every id in them is
    younger are not read, and the assets table is read only when old or legacy rows exist.
    """
    writer = LakeWriter(lake_root)
    now = time.time()
    found = {}
    for name in PUBLISHED_TABLES:
        uri = writer.lake.table_uri(name)
        table = open_table(uri)
        if table is None or "publication" not in column_names(table):
            continue
        old = {
            publication
            for publication in _older_publications(table, now - older_than_seconds)
            if publication_age_seconds(publication, now) > older_than_seconds
        }
        legacy = _legacy_keys(table)
        if old or legacy:
            found[name] = (uri, old, legacy)
    if not found:
        return 0
    named, keys = _named_publications(open_table(writer.lake.assets_uri))
    removed = 0
    for name, (uri, old, legacy) in found.items():
        stale = sorted(old - named)
        clauses = ([publications_predicate(stale)] if stale else []) + [
            legacy_predicate(key) for key in sorted(legacy & keys)
        ]
        if clauses:
            tag = {"commit": uuid.uuid4().hex, "assets": 0, "removed_unpublished": len(stale)}
            writer.delete(uri, " OR ".join(clauses), tag, max_attempts)
        if name == UNITS_TABLE:
            removed = len(stale) + len(legacy & keys)
    return removed


def _named_publications(assets: DeltaTable | None) -> tuple[set[str], set[AssetKey]]:
    """The publications the assets table names, and the keys whose row names one."""
    if assets is None or "publication" not in column_names(assets):
        return set(), set()
    data = assets.to_pyarrow_table(columns=[*KEY_COLUMNS, "publication"]).to_pydict()
    named, keys = set(), set()
    for source, dataset_id, asset_id, publication in zip(
        *(data[name] for name in (*KEY_COLUMNS, "publication")), strict=True
    ):
        if publication is not None:
            named.add(publication)
            keys.add((source, dataset_id, asset_id))
    return named, keys


def _older_publications(table: DeltaTable, before: float) -> set[str]:
    """The distinct publication ids that sort below the one made at ``before`` (epoch s).

    Read by delta-rs alone, which skips the files whose ids all sort at or above it.
    """
    from deltalake import QueryBuilder

    cutoff = quote(f"{math.ceil(before * 1000):013d}")
    answer = (
        QueryBuilder()
        .register("t", table)
        .execute(f"SELECT DISTINCT publication AS value FROM t WHERE publication < {cutoff}")
    )
    return set(pa.RecordBatchReader.from_stream(answer).read_all().column("value").to_pylist())


def _legacy_keys(table: DeltaTable) -> set[AssetKey]:
    """The keys of units rows written without a publication id."""
    from deltalake import QueryBuilder

    answer = (
        QueryBuilder()
        .register("t", table)
        .execute("SELECT DISTINCT source, dataset_id, asset_id FROM t WHERE publication IS NULL")
    )
    rows = pa.RecordBatchReader.from_stream(answer).read_all().to_pylist()
    return {(r["source"], r["dataset_id"], r["asset_id"]) for r in rows}


def compact(
    lake_root: LakeLike,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    max_attempts: int = MAX_ATTEMPTS,
) -> dict[str, dict[str, int]]:
    """Bin-pack both tables' small files, delete unreferenced old files and old log files.

    Units rows of unfinished publications are deleted first (:func:`remove_unpublished`).
    Readers keep a consistent snapshot throughout: compaction is one commit that swaps
    files with the same rows, and vacuum only deletes files that no version younger than
    ``retention_hours`` uses (nor any version at all, e.g. files of killed writers). A
    checkpoint is written, and log files older than the tables' ``delta.logRetentionDuration``
    (:data:`TABLE_CONFIGURATION`: a week) are removed, so opening stays fast.

    Parameters
    ----------
    lake_root : Lake, str or PathLike
        Lake root.
    retention_hours : int, default: 168
        Time travel keeps working for versions at most this old; older versions whose files
        were compacted away can no longer be read.
    max_attempts : int, default: 8
        Compaction conflicts with concurrent publishing are retried this many times.

    Returns
    -------
    dict
        Per table (``units``, ``assets``): ``files_removed``, ``files_added``,
        ``files_vacuumed`` and the ``version`` after compaction.
    """
    lake = Lake.of(lake_root)
    remove_unpublished(lake, max_attempts=max_attempts)
    report = {}
    for name, uri in (("units", lake.units_uri), ("assets", lake.assets_uri)):
        if open_table(uri) is None:
            continue
        metrics = retrying(partial(_compact_files, uri), f"compacting {uri}", max_attempts)
        vacuumed = retrying(
            partial(_vacuum, uri, retention_hours), f"vacuuming {uri}", max_attempts
        )
        table = _existing(uri)
        table.create_checkpoint()
        table.cleanup_metadata()  # log files older than delta.logRetentionDuration
        report[name] = {
            "files_removed": int(metrics["numFilesRemoved"]),
            "files_added": int(metrics["numFilesAdded"]),
            "files_vacuumed": len(vacuumed),
            "version": table.version(),
        }
    return report


def _compact_files(uri: str) -> dict[str, Any]:
    metrics: dict[str, Any] = _existing(uri).optimize.compact()
    return metrics


def _vacuum(uri: str, retention_hours: int) -> list[str]:
    return _existing(uri).vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=retention_hours >= DEFAULT_RETENTION_HOURS,
        full=True,  # also files no commit named (a killed writer's), before the last checkpoint too
    )


def _existing(uri: str) -> DeltaTable:
    """The table at ``uri``, which must exist."""
    table = open_table(uri)
    if table is None:
        raise FileNotFoundError(f"{uri}: the Delta table disappeared while it was compacted")
    return table
