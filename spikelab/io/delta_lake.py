"""The lake as two Delta Lake tables: one row per unit, and one row per asset.

Layout under a lake root (a local folder or an ``s3://bucket/prefix`` URL)::

    <root>/tables/units/            Delta table, one row per unit (columns as written by
        _delta_log/                 spikelab.io.units_table: source, dataset_id, asset_id,
        part-*.parquet              unit_index, ..., spike_times_ms, attribute columns)
    <root>/tables/assets/           Delta table, one row per asset (skip checks, provenance)
        _delta_log/
        part-*.parquet
    <root>/manifests/...            per-asset JSON manifests (written by the flows, unchanged)
    <root>/raw/..., <root>/runs/... unchanged

Only the files a table's ``_delta_log`` names belong to the table: a file left behind by a
killed writer, or anything else dropped into the folder, is never read (``compact`` deletes
such files once they are older than its retention, so keep nothing of your own there).

Publishing (:func:`publish`) takes up to three commits. First the assets' units are
appended to ``units``, each asset's rows tagged with a new ``publication`` id; then one
commit to ``assets`` records each asset with its ``publication`` and the units version it
landed in (this is the commit that publishes: a unit row counts only while its asset's row
names its publication); last, the rows of the publications they replaced are deleted.
Readers (:mod:`spikelab.io.delta_read`) keep only the rows an assets row names, so they
see an asset whole or not at all, and never rows of an unfinished publication. A writer
killed between the commits leaves rows no assets row names: :func:`remove_unpublished`
(run at the end of every flow run and by ``lake compact``) deletes them once they are an
hour old, so the two tables agree again without the inputs coming back.

The assets commit is also where a key's ownership is decided: an asset published with an
``owner`` (the input a key belongs to) is refused with
:class:`~spikelab.exceptions.LakeKeyConflictError` when the key's row names another
owner, checked on the snapshot the commit is made against; Delta's conflict detection
fails the commit if another writer changed the key's row since, and the check is made
again on the new snapshot.

The tables' names, schemas and commit loop are :mod:`spikelab.io.delta_tables`; the assets
table read by key (skip checks, owners) is :mod:`spikelab.io.delta_assets`; both are
imported here too, as they were before they moved.

Unit metadata and spike trains share the ``units`` table: Parquet stores each column apart,
so a query that does not name ``spike_times_ms`` never reads it (``benchmarks/bench_lake.py``
measures this). The table is not partitioned: per-file statistics prune well enough, and
partitions would split every commit into many small files.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from spikelab.exceptions import LakeSchemaError
from spikelab.io import brain_columns
from spikelab.io.delta_assets import (
    AssetRecord,
    AssetsIndex,
    AssetState,
    Published,
    asset_records,
    assets_index,
    check_owners,
)
from spikelab.io.delta_tables import (
    ASSETS_SCHEMA,
    COMMIT_TAG,
    DEFAULT_RETENTION_HOURS,
    FOOTER_KEY,
    KEY_COLUMNS,
    MAX_ATTEMPTS,
    PUBLISHED_TABLES,
    TABLE_CONFIGURATION,
    UNITS_SCHEMA,
    AssetKey,
    assets_uri,
    column_names,
    commit_info,
    conform,
    is_conflict,
    key_predicate,
    keys_predicate,
    lake_types,
    legacy_predicate,
    open_table,
    publications_predicate,
    publish_hooks,
    retrying,
    storage_options,
    table_schema,
    table_uri,
    units_uri,
)
from spikelab.io.lake import (
    ASSETS_TABLE,
    REGIONS_TABLE,
    SESSIONS_TABLE,
    UNITS_TABLE,
    Lake,
    LakeLike,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

__all__ = [  # publishing, and the names that moved to delta_tables / delta_assets
    "ASSETS_SCHEMA",
    "ASSETS_TABLE",
    "COMMIT_TAG",
    "DEFAULT_RETENTION_HOURS",
    "KEY_COLUMNS",
    "PUBLISHED_TABLES",
    "REGIONS_TABLE",
    "SESSIONS_TABLE",
    "TABLE_CONFIGURATION",
    "UNITS_SCHEMA",
    "UNITS_TABLE",
    "AssetKey",
    "AssetRecord",
    "AssetState",
    "LakeWriter",
    "Publication",
    "Published",
    "asset_records",
    "assets_index",
    "assets_uri",
    "column_names",
    "commit_info",
    "key_predicate",
    "open_table",
    "publication_age_seconds",
    "publications_predicate",
    "publish",
    "publish_hooks",
    "retrying",
    "storage_options",
    "table_uri",
    "units_uri",
]

# A table object kept up to date with update_incremental grows with every commit it reads;
# one loaded afresh starts from the newest checkpoint (delta-rs writes one every 100).
REOPEN_AFTER_VERSIONS = 100
# Small files the assets table may hold before a publisher bin-packs them (see LakeWriter).
ASSETS_FILES_LIMIT = 64
# Bin-packing makes assets files of about this size and leaves the larger ones as they are.
ASSETS_FILE_TARGET_BYTES = 1 << 18  # 256 KiB: the rows of about 600 assets


class Publication(NamedTuple):
    """One finished asset to publish: its key, its units, its manifest, its owner.

    ``units`` is an Arrow table as built by ``spikelab.io.units_table.units_arrow_table``
    (its ``spikelab`` schema metadata is kept in the assets table), or None for an asset
    with no units to publish (a failed load): then only its assets row changes and any
    units published before stay. ``owner`` names the input the key belongs to (a local
    file's path); the commit refuses a key whose row names another owner. None: no check.
    """

    key: AssetKey
    units: pa.Table | None
    manifest: Mapping[str, Any]
    owner: str | None = None


def publish(
    lake_root: LakeLike,
    assets: Sequence[Publication | tuple[AssetKey, pa.Table | None, Mapping[str, Any]]],
    *,
    flow_run_id: str | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> int | None:
    """Publish finished assets: their units replace any earlier rows, in one commit.

    Parameters
    ----------
    lake_root : Lake, str or PathLike
        Lake root folder or ``s3://`` URL; the tables are created on first use.
    assets : sequence of Publication or (key, units, manifest)
        The assets of this commit; ``key`` is ``(source, dataset_id, asset_id)`` and every
        row of ``units`` must carry it. A manifest's ``input.content_id``,
        ``input.listed_id``, ``status`` and ``flow_run_id`` fill the assets row; the manifest
        itself is stored as JSON with ``table_version`` set to the returned version.
    flow_run_id : str | None, default: None
        Recorded in the commits; each asset's own ``flow_run_id`` wins in its row.
    max_attempts : int, default: 8
        Commits that conflict with other writers are retried this many times in all, with
        exponential backoff and jitter.

    Returns
    -------
    int | None
        The units table version the assets landed in; None when no asset carried units.

    Raises
    ------
    ValueError
        If a key appears twice or a units row does not carry its asset's key.
    LakeSchemaError
        If a column's values cannot take the type the table already has for it.
    LakeCommitError
        If the commits still conflicted after ``max_attempts`` tries; the tables are as
        they were (or, if only the assets commit failed, publishing again repairs it).
    """
    return LakeWriter(lake_root).publish(assets, flow_run_id=flow_run_id, max_attempts=max_attempts)


class LakeWriter:
    """Publish batch after batch into one lake, keeping its two tables open in between.

    Before each assets commit (and before a retried append) a table object is brought up
    to date with ``update_incremental``, which reads only the commits made since it last
    looked, instead of loading the table afresh: on a local disk a fresh load lists the
    whole ``_delta_log``, a cost that grows with every version. An updated table object
    keeps growing, though (about 90 KB a commit), so after :data:`REOPEN_AFTER_VERSIONS`
    versions it is loaded afresh, from the newest checkpoint. The assets table's small files
    are bin-packed once there are more than :data:`ASSETS_FILES_LIMIT`, since every assets
    commit reads it by key (delta-rs, for the rows it replaces) and random asset ids let no
    file be skipped. Files of :data:`ASSETS_FILE_TARGET_BYTES` are left as they are, so a
    compaction holds a few of them in memory, not the whole table (rewriting all 10,000
    assets' rows raised a run's peak RSS by 85 MB); the owners and publications of its
    keys are kept file by file (:class:`~spikelab.io.delta_assets.AssetsIndex`, a few
    hundred bytes an asset), so each file is read for them once. So a writer's cost per
    commit stays flat however many batches it publishes. Use one writer per thread; the
    flows' publisher keeps one per run.
    """

    def __init__(self, lake_root: LakeLike) -> None:
        self.lake = Lake.of(lake_root)
        self.root = self.lake.root
        self._tables: dict[str, tuple[DeltaTable, int]] = {}  # uri -> table, version opened at
        self._regions_checked = False
        self._assets_index = AssetsIndex()  # the assets table's owners, file by file

    def publish(
        self,
        assets: Sequence[Publication | tuple[AssetKey, pa.Table | None, Mapping[str, Any]]],
        *,
        flow_run_id: str | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        before_assets: Callable[[], object] | None = None,
    ) -> int | None:
        """Publish finished assets, as :func:`publish` does (see the module docstring).

        ``before_assets``, if given, is called after the units commits and before the
        assets commit (the one that publishes); if it raises, nothing is published and the
        units rows just appended are deleted, as when the assets commit fails.
        """
        batch = [Publication(*entry) for entry in assets]
        if not batch:
            return None
        _check_keys(batch)
        tag = {"flow_run_id": flow_run_id, "assets": len(batch), "commit": uuid.uuid4().hex}
        ids = _publication_ids(batch)
        with_units = [entry for entry in batch if entry.units is not None]
        footers = _footers(with_units)
        version = None
        if with_units:
            self.ensure_regions(tag, max_attempts)
            _record_mapping(with_units, footers)
            units = _combined_units(with_units, ids)
            sessions = _sessions(with_units, ids)
            with ThreadPoolExecutor(max_workers=1) as other:  # two tables: two commits at once
                appended = other.submit(
                    self._commit, self.lake.table_uri(SESSIONS_TABLE), sessions, None, tag,
                    max_attempts,
                )  # fmt: skip
                version = self._commit(self.lake.units_uri, units, None, tag, max_attempts)
                appended.result()
        try:
            if before_assets is not None:
                before_assets()
            replaced = self._commit_assets(
                batch, ids, footers, version, flow_run_id, tag, max_attempts
            )
        except BaseException:
            if with_units:  # unpublished rows: removed now, or by a later remove_unpublished
                self._delete_quietly(publications_predicate(ids[e.key] for e in with_units))
            raise
        superseded = _superseded(with_units, replaced)
        if superseded:
            for name in PUBLISHED_TABLES:
                self.delete(self.lake.table_uri(name), superseded, tag, max_attempts)
        self._bound_assets_files(tag)
        return version

    def ensure_regions(self, tag: dict[str, Any], attempts: int, *, refresh: bool = False) -> None:
        """Write the ontology as ``tables/regions`` (once, or again with ``refresh``).

        Nothing happens without iblatlas. The whole table is replaced, so two writers
        making it at once leave one copy (the ``regions`` view also keeps one row per id).
        """
        uri = self.lake.table_uri(REGIONS_TABLE)
        if not refresh and (self._regions_checked or self._latest(uri) is not None):
            self._regions_checked = True
            return
        tree = brain_columns.ontology()
        if tree is not None:
            self._commit(uri, tree, "true", tag, attempts)
        self._regions_checked = True

    def _commit_assets(
        self,
        batch: Sequence[Publication],
        ids: Mapping[AssetKey, str],
        footers: Mapping[AssetKey, str],
        version: int | None,
        flow_run_id: str | None,
        tag: dict[str, Any],
        attempts: int,
    ) -> dict[AssetKey, Published]:
        """Record ``batch`` in the assets table; the rows it replaced, by key.

        The owners are checked on the snapshot the commit is made against: if another
        writer changes one of these rows meanwhile, Delta fails the commit as a conflict
        and the next attempt checks again.
        """
        uri = self.lake.assets_uri
        if self._latest(uri, refresh=False) is None:  # the commit below reads it afresh
            self._create_assets_table(uri)
        replaced: dict[AssetKey, Published] = {}
        written: list[pa.Table] = []

        def rows(table: DeltaTable | None, schema: pa.Schema | None) -> pa.Table:
            replaced.clear()
            names = schema.names if schema is not None else []
            replaced.update(self._assets_index.rows(table, names, [e.key for e in batch]))
            check_owners(batch, replaced)
            written[:] = [_assets_rows(batch, version, flow_run_id, ids, replaced, footers)]
            return written[0]

        self._commit(uri, rows, keys_predicate(e.key for e in batch), tag, attempts)
        self._assets_index.learn(self._tables[uri][0], written[0])
        return dict(replaced)

    def _create_assets_table(self, uri: str) -> None:
        """Create the empty assets table before its first rows.

        Two writers creating a table with their rows would both land: delta-rs turns the
        second creation into an append, so this table, whose commits decide ownership, is
        made empty first and only ever written against a snapshot.
        """
        from deltalake import DeltaTable

        DeltaTable.create(
            uri,
            ASSETS_SCHEMA,
            mode="ignore",
            configuration=TABLE_CONFIGURATION,
            storage_options=storage_options(uri),
        )

    def delete(
        self,
        uri: str,
        predicate: str | Callable[[list[str]], str],
        tag: dict[str, Any],
        attempts: int = MAX_ATTEMPTS,
    ) -> int:
        """Delete the rows of the table at ``uri`` that ``predicate`` names, in one commit.

        The one way rows leave the lake's tables: replaced rows after a publication, rows
        of unfinished publications (:mod:`spikelab.io.delta_upkeep`), removed assets
        (:mod:`spikelab.io.lake_remove`). ``predicate`` is SQL, or a function of the
        table's column names that returns it (called at each attempt). A missing table, or
        one without the key columns, deletes nothing. Returns how many rows were deleted.
        """
        from deltalake import CommitProperties

        def delete() -> int:
            table = self._latest(uri)
            if table is None:
                return 0
            names = column_names(table)
            if not set(KEY_COLUMNS) <= set(names):
                return 0
            metrics = table.delete(
                predicate(names) if callable(predicate) else predicate,
                commit_properties=CommitProperties(custom_metadata={COMMIT_TAG: tag}),
                post_commithook_properties=publish_hooks(),
            )
            return int(metrics.get("num_deleted_rows") or 0)

        return retrying(delete, f"deleting rows of {uri}", attempts)

    def _delete_quietly(self, predicate: str) -> None:
        """Delete unpublished rows of a failed publication; a failure leaves them for later."""
        tag = {"commit": uuid.uuid4().hex, "assets": 0}
        for name in PUBLISHED_TABLES:
            try:
                self.delete(self.lake.table_uri(name), predicate, tag, 2)
            except Exception:  # noqa: BLE001 - remove_unpublished deletes them within the hour
                continue

    def _bound_assets_files(self, tag: dict[str, Any]) -> None:
        """Bin-pack the assets table's small files once there are more than the limit.

        A compaction that conflicts with another writer is left for a later batch: it
        changes no rows, so skipping it loses nothing.
        """
        from deltalake import CommitProperties
        from deltalake.exceptions import DeltaError

        kept = self._tables.get(self.lake.assets_uri)  # as of this writer's own commit
        if kept is None or len(kept[0].file_uris()) <= ASSETS_FILES_LIMIT:
            return
        table = kept[0]
        sizes = pa.table(table.get_add_actions()).column("size_bytes")
        if pc.sum(pc.less(sizes, ASSETS_FILE_TARGET_BYTES)).as_py() <= ASSETS_FILES_LIMIT:
            return
        try:
            table.optimize.compact(
                target_size=ASSETS_FILE_TARGET_BYTES,
                commit_properties=CommitProperties(custom_metadata={COMMIT_TAG: tag}),
                post_commithook_properties=publish_hooks(),
            )
        except DeltaError as error:
            if not is_conflict(error):
                raise

    def _latest(self, uri: str, *, refresh: bool = True) -> DeltaTable | None:
        """The table at ``uri`` at its newest version; None while there is no table.

        With ``refresh`` False, a table this writer holds is taken as it last saw it (at
        its own last commit, or newer): no request is made for it.
        """
        table, opened = self._tables.get(uri, (None, 0))
        if table is not None and table.version() - opened < REOPEN_AFTER_VERSIONS:
            if refresh:
                table.update_incremental()
            return table
        table = open_table(uri)
        if table is not None:
            self._tables[uri] = (table, table.version())
        return table

    def _commit(
        self,
        uri: str,
        data: pa.Table | Callable[[DeltaTable | None, pa.Schema | None], pa.Table],
        predicate: str | None,
        tag: dict[str, Any],
        attempts: int,
    ) -> int:
        """Append ``data``, or replace the rows matching ``predicate`` with it; its version.

        ``data`` may be a function of the table's snapshot and its schema, called at each
        attempt (the schema is read once per attempt, for it and for the types' check).

        A replacement reads the table afresh first (its rows are read by key). An append is
        first tried on the snapshot this writer holds, which saves the round trips of a
        refresh: delta-rs reads the commits made since as it commits, and fails the append
        as a conflict if one of them changed the schema; each later attempt reads afresh.
        """
        from deltalake import CommitProperties, write_deltalake

        attempts_made = 0

        def write() -> int:
            nonlocal attempts_made
            attempts_made += 1
            table = self._latest(uri, refresh=predicate is not None or attempts_made > 1)
            schema = table_schema(table) if table is not None else None
            values = data(table, schema) if callable(data) else data
            commit = CommitProperties(custom_metadata={COMMIT_TAG: tag})
            hooks = publish_hooks()
            if table is None:  # mode "error": a writer who made the table first is a conflict
                write_deltalake(
                    uri,
                    values,
                    mode="error",
                    storage_options=storage_options(uri),
                    configuration=TABLE_CONFIGURATION,
                    commit_properties=commit,
                    post_commithook_properties=hooks,
                )
                return 0
            values = conform(values, schema, uri)
            if predicate is None:
                write_deltalake(
                    table,
                    values,
                    mode="append",
                    schema_mode="merge",
                    commit_properties=commit,
                    post_commithook_properties=hooks,
                )
            else:
                write_deltalake(
                    table,
                    values,
                    mode="overwrite",
                    predicate=predicate,
                    schema_mode="merge",
                    commit_properties=commit,
                    post_commithook_properties=hooks,
                )
            # A table object moves to the version its own write committed, whatever others do.
            return table.version()

        return retrying(write, f"publishing {tag['assets']} asset(s) to {uri}", attempts)


def _footers(batch: Sequence[Publication]) -> dict[AssetKey, str]:
    """Each asset's units footer (the ``spikelab`` schema metadata), decoded once, by key."""
    footers = {}
    for entry in batch:
        metadata = (entry.units.schema.metadata or {}) if entry.units is not None else {}
        if FOOTER_KEY in metadata:
            footers[entry.key] = metadata[FOOTER_KEY].decode()
    return footers


def _record_mapping(batch: Sequence[Publication], footers: Mapping[AssetKey, str]) -> None:
    """Copy what mapped each asset's regions (its units' footer) into its manifest, in place.

    The caller's manifest is then the one the assets row and the manifest file agree on.
    """
    for entry in batch:
        footer = footers.get(entry.key)
        regions = json.loads(footer).get("regions") if footer is not None else None
        if regions is not None and isinstance(entry.manifest, dict):
            entry.manifest["regions"] = regions


def _sessions(batch: Sequence[Publication], ids: Mapping[AssetKey, str]) -> pa.Table:
    """One sessions row per asset, tagged with its publication."""
    rows = [
        {
            **brain_columns.session_row(
                entry.key, entry.manifest, entry.units.num_rows if entry.units else 0
            ),
            "publication": ids[entry.key],
        }
        for entry in batch
    ]
    schema = brain_columns.SESSIONS_SCHEMA.append(pa.field("publication", pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)


def _publication_ids(batch: Sequence[Publication]) -> dict[AssetKey, str]:
    """A new publication id per asset: its creation time in ms, then random hex."""
    stamp = f"{int(time.time() * 1000):013d}"
    return {entry.key: f"{stamp}-{uuid.uuid4().hex[:16]}" for entry in batch}


def publication_age_seconds(publication: str, now: float | None = None) -> float:
    """How old a publication id is, from the time it starts with (0 for a foreign id)."""
    stamp, _, _ = publication.partition("-")
    if not stamp.isdigit():
        return 0.0
    return (time.time() if now is None else now) - int(stamp) / 1000


def _superseded(batch: Sequence[Publication], replaced: Mapping[AssetKey, Published]) -> str:
    """The predicate of the units rows ``batch`` replaced; empty when there are none.

    Those are the rows of each key's former publication, or, for a row written before
    publication ids existed, the key's rows without one.
    """
    clauses = []
    former = {row.publication for e in batch if (row := replaced.get(e.key)) and row.publication}
    if former:
        clauses.append(publications_predicate(former))
    clauses.extend(
        legacy_predicate(e.key)
        for e in batch
        if (row := replaced.get(e.key)) is not None and row.publication is None
    )
    return " OR ".join(clauses)


def _check_keys(batch: Sequence[Publication]) -> None:
    keys = [tuple(entry.key) for entry in batch]
    if len(set(keys)) != len(keys):
        raise ValueError(f"publish got the same asset twice in one batch: {keys}")
    for entry in batch:
        if entry.units is None or entry.units.num_rows == 0:
            continue
        for column, expected in zip(KEY_COLUMNS, entry.key, strict=True):
            values = entry.units.column(column)
            if not pc.all(pc.equal(values, pa.scalar(expected, values.type))).as_py():
                raise ValueError(
                    f"asset {entry.key}: some units rows have another {column} than the key "
                    f"({expected!r}); build the table with the asset's own key"
                )


def _combined_units(batch: Sequence[Publication], ids: Mapping[AssetKey, str]) -> pa.Table:
    """The assets' units as one table, on the union of their columns, with publication ids."""
    tables = [
        _with_publication(lake_types(entry.units), ids[entry.key])
        for entry in batch
        if entry.units is not None
    ]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        keys = [entry.key for entry in batch]
        raise LakeSchemaError(
            f"the units of assets {keys} cannot share one table: {error}. Give the clashing "
            "attribute the same type in every asset (or publish them apart to see which)"
        ) from error


def _with_publication(table: pa.Table, publication: str) -> pa.Table:
    column = pa.array([publication] * table.num_rows, pa.string())
    if "publication" in table.schema.names:
        return table.set_column(table.schema.get_field_index("publication"), "publication", column)
    return table.append_column("publication", column)


def _assets_rows(
    batch: Sequence[Publication],
    version: int | None,
    run: str | None,
    ids: Mapping[AssetKey, str],
    replaced: Mapping[AssetKey, Published],
    footers: Mapping[AssetKey, str],
) -> pa.Table:
    """The assets rows of ``batch``; an asset without units keeps its former publication."""
    now = datetime.now(UTC)
    rows = []
    for entry in batch:
        former = replaced.get(entry.key)
        manifest = dict(entry.manifest)
        landed = version if entry.units is not None else None
        if landed is not None:
            manifest["table_version"] = landed
        given = manifest.get("input") or {}
        rows.append(
            {
                **dict(zip(KEY_COLUMNS, entry.key, strict=True)),
                "content_id": given.get("content_id"),
                "listed_id": given.get("listed_id"),
                "status": str(manifest.get("status", "ok")),
                "rows": entry.units.num_rows if entry.units is not None else None,
                "manifest": json.dumps(manifest, allow_nan=False, default=str),
                "units_metadata": footers.get(entry.key),
                "version": landed,
                "flow_run_id": manifest.get("flow_run_id") or run,
                "published_at": now,
                "publication": ids[entry.key]
                if entry.units is not None
                else (former.publication if former else None),
                "owner": entry.owner,
            }
        )
    return pa.Table.from_pylist(rows, schema=ASSETS_SCHEMA)
