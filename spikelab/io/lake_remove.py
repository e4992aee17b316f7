"""Remove assets, or a whole dataset, from the lake.

Removing mirrors publishing (see :mod:`spikelab.io.delta_lake`): one commit to the assets
table deletes the assets' rows, and from that commit on no reader sees their units (a units
row counts only while an assets row names its publication). Then their units rows, their
rows of ``tables/sessions`` when that table exists, and their manifests and rasters are
deleted. A removal killed after the first commit leaves only unpublished rows, which
:func:`~spikelab.io.delta_upkeep.remove_unpublished` deletes later.

Every version stays readable with ``--as-of`` until ``lake compact`` vacuums its files.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from spikelab.io import storage
from spikelab.io.delta_lake import LakeWriter
from spikelab.io.delta_tables import (
    KEY_COLUMNS,
    MAX_ATTEMPTS,
    AssetKey,
    column_names,
    keys_predicate,
    legacy_predicate,
    open_table,
    publications_predicate,
)
from spikelab.io.lake import SESSIONS_TABLE, Lake, LakeLike

if TYPE_CHECKING:
    from deltalake import DeltaTable


class Removal(NamedTuple):
    """What :func:`remove_assets` removed.

    ``asked`` describes the selection in words; ``assets`` are the removed keys;
    ``units`` the number of units rows deleted; ``files`` the manifests and rasters
    deleted; ``last_version`` the newest units-table version that still holds the removed
    rows (read it with ``as_of``), or None when the assets had no units rows.
    """

    asked: str
    assets: list[AssetKey]
    units: int
    files: int
    last_version: int | None


def remove_assets(
    lake_root: LakeLike,
    *,
    assets: Sequence[str] | None = None,
    dataset: str | None = None,
    source: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> Removal:
    """Remove assets from the lake: their assets rows first, in one commit, then the rest.

    Parameters
    ----------
    lake_root : Lake, str or PathLike
        Lake root folder or ``s3://`` URL.
    assets : sequence of str | None, default: None
        Asset ids to remove (in any dataset, unless ``dataset``/``source`` narrow them).
    dataset : str | None, default: None
        Remove every asset of this dataset id.
    source : str | None, default: None
        Only assets of this source (``dandi``, ``ibl``, ``files``).
    max_attempts : int, default: 8
        Commits that conflict with other writers are retried this many times.

    Returns
    -------
    Removal
        What was removed; no assets when nothing matched.

    Raises
    ------
    ValueError
        When neither ``assets`` nor ``dataset`` is given.
    LakeCommitError
        When a commit still conflicted after ``max_attempts`` tries.
    """
    if not assets and dataset is None:
        raise ValueError("remove_assets needs assets=[...] or dataset=NAME: which to remove")
    asked = _described(assets, dataset, source)
    lake = Lake.of(lake_root)
    table = open_table(lake.assets_uri)
    if table is None:
        return Removal(asked, [], 0, 0, None)
    rows = _matching_rows(table, assets, dataset, source)
    if not rows:
        return Removal(asked, [], 0, 0, None)
    return _remove_rows(lake, rows, asked, max_attempts)


def forget_failures(
    lake_root: LakeLike,
    landed: Mapping[str, AssetKey],
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> list[AssetKey]:
    """Remove the failed rows of inputs that have now landed under another key.

    ``landed`` maps an input (the ``owner`` its rows record: a local file's path) to the
    key it landed under; a ``failed`` row of the same input under any other key (an earlier
    run refused it, then it landed with ``--dataset``, say) would stay in ``lake summary``
    for good. Returns the keys removed.
    """
    lake = Lake.of(lake_root)
    table = open_table(lake.assets_uri)
    if table is None or not landed:
        return []
    names = column_names(table)
    if "owner" not in names:
        return []
    rows = []
    for row in table.to_pyarrow_table(columns=[*KEY_COLUMNS, "status", "owner"]).to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if row["status"] == "failed" and row["owner"] in landed and landed[row["owner"]] != key:
            rows.append((key, None))
    if rows:
        _remove_rows(lake, rows, "failures of inputs that landed", max_attempts)
    return [key for key, _ in rows]


def _remove_rows(
    lake: Lake, rows: Sequence[tuple[AssetKey, str | None]], asked: str, attempts: int
) -> Removal:
    """Remove the assets rows of ``rows`` in one commit, then what they named."""
    keys = sorted({key for key, _ in rows})
    publications = sorted({publication for _, publication in rows if publication is not None})
    tag = {"commit": uuid.uuid4().hex, "assets": len(keys), "removed": len(keys)}
    writer = LakeWriter(lake)
    writer.delete(lake.assets_uri, keys_predicate(keys), tag, attempts)
    units = open_table(lake.units_uri)
    last_version = None if units is None else units.version()
    rows_of = partial(_rows_predicate, keys, publications)
    removed_units = writer.delete(lake.units_uri, rows_of, tag, attempts)
    if removed_units == 0:
        last_version = None
    writer.delete(lake.table_uri(SESSIONS_TABLE), rows_of, tag, attempts)
    return Removal(asked, keys, removed_units, _remove_files(lake, keys), last_version)


def _described(assets: Sequence[str] | None, dataset: str | None, source: str | None) -> str:
    parts = []
    if assets:
        parts.append(f"asset {', '.join(assets)}")
    if dataset is not None:
        parts.append(f"dataset {dataset}")
    if source is not None:
        parts.append(f"source {source}")
    return " in ".join(parts)


def _matching_rows(
    table: DeltaTable,
    assets: Sequence[str] | None,
    dataset: str | None,
    source: str | None,
) -> list[tuple[AssetKey, str | None]]:
    """The keys of the assets rows that match, each with the publication its row names."""
    names = column_names(table)
    columns = [*KEY_COLUMNS, *(["publication"] if "publication" in names else [])]
    found = []
    for row in table.to_pyarrow_table(columns=columns).to_pylist():
        if assets and row["asset_id"] not in assets:
            continue
        if dataset is not None and row["dataset_id"] != dataset:
            continue
        if source is not None and row["source"] != source:
            continue
        key = (row["source"], row["dataset_id"], row["asset_id"])
        found.append((key, row.get("publication")))
    return found


def _rows_predicate(
    keys: Sequence[AssetKey], publications: Sequence[str], columns: Sequence[str]
) -> str:
    """The rows the removed assets rows named: their publications, or keyed rows without one.

    Rows of a publication still going on for one of these keys are left alone (a writer
    publishing the key again after the removal keeps its rows). A table without a
    ``publication`` column (written before publication ids) loses every row of the keys.
    """
    if "publication" not in columns:
        return keys_predicate(keys)
    clauses = [legacy_predicate(key) for key in keys]
    if publications:
        clauses.insert(0, publications_predicate(publications))
    return " OR ".join(clauses)


def _remove_files(lake: Lake, keys: Sequence[AssetKey]) -> int:
    """Delete the keys' manifests and rasters; how many were there."""
    removed = 0
    for key in keys:
        for path in (lake.manifest_path(*key), lake.raster_path(*key)):
            if storage.exists(path):
                storage.remove(path)
                removed += 1
    return removed
