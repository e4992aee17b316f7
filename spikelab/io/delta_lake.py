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

Unit metadata and spike trains share the ``units`` table: Parquet stores each column apart,
so a query that does not name ``spike_times_ms`` never reads it (``benchmarks/bench_lake.py``
measures this). The table is not partitioned: per-file statistics prune well enough, and
partitions would split every commit into many small files.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from spikelab.exceptions import LakeCommitError, LakeKeyConflictError, LakeSchemaError
from spikelab.io import brain_columns, storage

if TYPE_CHECKING:
    from deltalake import DeltaTable, PostCommitHookProperties

UNITS_TABLE = "tables/units"
ASSETS_TABLE = "tables/assets"
SESSIONS_TABLE = "tables/sessions"
REGIONS_TABLE = "tables/regions"
# Tables whose rows carry a publication id and count only while an assets row names it.
PUBLISHED_TABLES = (UNITS_TABLE, SESSIONS_TABLE)
DEFAULT_RETENTION_HOURS = 168  # Delta's own default: a week of time travel after compaction
# Log files and replaced data files are kept as long as each other: a version can be read
# back only while both are there. compact() removes the expired ones.
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": f"interval {DEFAULT_RETENTION_HOURS} hours",
    "delta.deletedFileRetentionDuration": f"interval {DEFAULT_RETENTION_HOURS} hours",
}
KEY_COLUMNS = ("source", "dataset_id", "asset_id")
UNITS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("dataset_id", pa.string()),
        ("asset_id", pa.string()),
        ("unit_index", pa.int32()),
        ("unit_id", pa.string()),
        ("n_spikes", pa.int64()),
        ("firing_rate_hz", pa.float64()),
        ("spike_times_ms", pa.list_(pa.float64())),
        ("location_x", pa.float64()),
        ("location_y", pa.float64()),
        ("location_z", pa.float64()),
        ("location_label", pa.string()),
        ("group_name", pa.string()),
        ("electrode", pa.int32()),
        ("publication", pa.string()),
    ]
)
ASSETS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("dataset_id", pa.string()),
        ("asset_id", pa.string()),
        ("content_id", pa.string()),
        ("listed_id", pa.string()),
        ("status", pa.string()),
        ("rows", pa.int64()),
        ("manifest", pa.string()),
        ("units_metadata", pa.string()),
        ("version", pa.int64()),
        ("flow_run_id", pa.string()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        ("publication", pa.string()),
        ("owner", pa.string()),
    ]
)
_FOOTER_KEY = b"spikelab"
COMMIT_TAG = "spikelab"
_MAX_ATTEMPTS = 8
_T = TypeVar("_T")

AssetKey = tuple[str, str, str]


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


class AssetState(NamedTuple):
    """What the lake holds for one asset (see :func:`assets_index`)."""

    content_id: str | None
    listed_id: str | None
    status: str
    version: int | None
    rows: int | None = None


def units_uri(lake_root: str | os.PathLike[str]) -> str:
    """Where the units table lives under a lake root."""
    return storage.join(_root(lake_root), UNITS_TABLE)


def assets_uri(lake_root: str | os.PathLike[str]) -> str:
    """Where the assets table lives under a lake root."""
    return storage.join(_root(lake_root), ASSETS_TABLE)


def table_uri(lake_root: str | os.PathLike[str], table: str) -> str:
    """Where one of the lake's tables (e.g. :data:`SESSIONS_TABLE`) lives under a root."""
    return storage.join(_root(lake_root), table)


def _root(lake_root: str | os.PathLike[str]) -> str:
    text = str(lake_root).rstrip("/")
    return text if storage.is_remote(text) else os.path.abspath(text)


def storage_options(location: str) -> dict[str, str] | None:
    """delta-rs storage options for ``location``: None locally, safe commits on S3.

    On S3, concurrent writers are only safe with conditional puts (``conditional_put=etag``);
    the endpoint and region come from ``AWS_ENDPOINT_URL(_S3)`` and ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``; credentials are read from the environment by delta-rs itself.
    """
    if not location.startswith("s3://"):
        return None
    options = {"conditional_put": "etag"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    return options


def open_table(uri: str) -> DeltaTable | None:
    """The Delta table at ``uri`` (latest version), or None when there is no table yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    # Not DeltaTable.is_deltatable: it holds the GIL while it waits on the network.
    try:
        return DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        return None


def column_names(table: DeltaTable) -> list[str]:
    """The names of a Delta table's columns, as its loaded version has them."""
    names: list[str] = pa.schema(table.schema().to_arrow()).names
    return names


def publish(
    lake_root: str | os.PathLike[str],
    assets: Sequence[Publication | tuple[AssetKey, pa.Table | None, Mapping[str, Any]]],
    *,
    flow_run_id: str | None = None,
    max_attempts: int = _MAX_ATTEMPTS,
) -> int | None:
    """Publish finished assets: their units replace any earlier rows, in one commit.

    Parameters
    ----------
    lake_root : str or PathLike
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

    Before each commit a table object is brought up to date with ``update_incremental``,
    which reads only the commits made since it last looked, instead of loading the table
    afresh: on a local disk a fresh load lists the whole ``_delta_log``, a cost that grows
    with every version. Use one writer per thread; the flows' publisher keeps one per run.
    """

    def __init__(self, lake_root: str | os.PathLike[str]) -> None:
        self.root = _root(lake_root)
        self._tables: dict[str, DeltaTable] = {}
        self._regions_checked = False

    def publish(
        self,
        assets: Sequence[Publication | tuple[AssetKey, pa.Table | None, Mapping[str, Any]]],
        *,
        flow_run_id: str | None = None,
        max_attempts: int = _MAX_ATTEMPTS,
    ) -> int | None:
        """Publish finished assets, as :func:`publish` does (see the module docstring)."""
        batch = [Publication(*entry) for entry in assets]
        if not batch:
            return None
        _check_keys(batch)
        tag = {"flow_run_id": flow_run_id, "assets": len(batch), "commit": uuid.uuid4().hex}
        ids = _publication_ids(batch)
        with_units = [entry for entry in batch if entry.units is not None]
        version = None
        if with_units:
            self.ensure_regions(tag, max_attempts)
            _record_mapping(with_units)
            units = _combined_units(with_units, ids)
            sessions = _sessions(with_units, ids)
            with ThreadPoolExecutor(max_workers=1) as other:  # two tables: two commits at once
                appended = other.submit(
                    self._commit, table_uri(self.root, SESSIONS_TABLE), sessions, None, tag,
                    max_attempts,
                )  # fmt: skip
                version = self._commit(units_uri(self.root), units, None, tag, max_attempts)
                appended.result()
        try:
            replaced = self._commit_assets(batch, ids, version, flow_run_id, tag, max_attempts)
        except BaseException:
            if with_units:  # unpublished rows: removed now, or by a later remove_unpublished
                self._delete_quietly(publications_predicate(ids[e.key] for e in with_units))
            raise
        superseded = _superseded(with_units, replaced)
        if superseded:
            for name in PUBLISHED_TABLES:
                self._delete(table_uri(self.root, name), superseded, tag, max_attempts)
        return version

    def ensure_regions(self, tag: dict[str, Any], attempts: int, *, refresh: bool = False) -> None:
        """Write the ontology as ``tables/regions`` (once, or again with ``refresh``).

        Nothing happens without iblatlas. The whole table is replaced, so two writers
        making it at once leave one copy (the ``regions`` view also keeps one row per id).
        """
        uri = table_uri(self.root, REGIONS_TABLE)
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
        uri = assets_uri(self.root)
        if self._latest(uri) is None:
            self._create_assets_table(uri)
        replaced: dict[AssetKey, Published] = {}

        def rows(table: DeltaTable | None) -> pa.Table:
            replaced.clear()
            replaced.update(_published_rows(table, [entry.key for entry in batch]))
            _check_owners(batch, replaced)
            return _assets_rows(batch, version, flow_run_id, ids, replaced)

        self._commit(uri, rows, _predicate(batch), tag, attempts)
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

    def _delete(self, uri: str, predicate: str, tag: dict[str, Any], attempts: int) -> None:
        """Delete the rows of the table at ``uri`` matching ``predicate`` in one commit."""
        from deltalake import CommitProperties

        def delete() -> None:
            table = self._latest(uri)
            if table is not None:
                table.delete(
                    predicate,
                    commit_properties=CommitProperties(custom_metadata={COMMIT_TAG: tag}),
                    post_commithook_properties=publish_hooks(),
                )

        retrying(delete, f"deleting replaced rows of {uri}", attempts)

    def _delete_quietly(self, predicate: str) -> None:
        """Delete unpublished rows of a failed publication; a failure leaves them for later."""
        tag = {"commit": uuid.uuid4().hex, "assets": 0}
        for name in PUBLISHED_TABLES:
            try:
                self._delete(table_uri(self.root, name), predicate, tag, 2)
            except Exception:  # noqa: BLE001 - remove_unpublished deletes them within the hour
                continue

    def _latest(self, uri: str) -> DeltaTable | None:
        """The table at ``uri`` at its newest version; None while there is no table."""
        table = self._tables.get(uri)
        if table is not None:
            table.update_incremental()
            return table
        table = open_table(uri)
        if table is not None:
            self._tables[uri] = table
        return table

    def _commit(
        self,
        uri: str,
        data: pa.Table | Callable[[DeltaTable | None], pa.Table],
        predicate: str | None,
        tag: dict[str, Any],
        attempts: int,
    ) -> int:
        """Append ``data``, or replace the rows matching ``predicate`` with it; its version.

        ``data`` may be a function of the table's snapshot, called at each attempt.
        """
        from deltalake import CommitProperties, write_deltalake

        def write() -> int:
            table = self._latest(uri)  # at each attempt: the latest schema and files
            values = data(table) if callable(data) else data
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
            values = _conform(values, table, uri)
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


class Published(NamedTuple):
    """An assets row as it stands before a publication replaces it."""

    owner: str | None
    publication: str | None


def _record_mapping(batch: Sequence[Publication]) -> None:
    """Copy what mapped each asset's regions (its units' footer) into its manifest, in place.

    The caller's manifest is then the one the assets row and the manifest file agree on.
    """
    for entry in batch:
        footer = (entry.units.schema.metadata or {}) if entry.units is not None else {}
        regions = json.loads(footer[_FOOTER_KEY]).get("regions") if _FOOTER_KEY in footer else None
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


def _published_rows(
    table: DeltaTable | None, keys: Sequence[AssetKey]
) -> dict[AssetKey, Published]:
    """``keys``' rows in the assets table ``table`` (as loaded): owner and publication.

    Read by delta-rs's own engine, which skips the files whose statistics rule the asset
    ids out (a pyarrow dataset opens every file: a cost that grows with each commit).
    """
    from deltalake import QueryBuilder

    if table is None or not keys:
        return {}
    names = column_names(table)
    extra = [name for name in ("owner", "publication") if name in names]
    ids = ", ".join(_quote(asset_id) for asset_id in sorted({key[2] for key in keys}))
    answer = (
        QueryBuilder()
        .register("assets", table)
        .execute(
            f"SELECT {', '.join([*KEY_COLUMNS, *extra])} FROM assets WHERE asset_id IN ({ids})"
        )
    )
    wanted = set(keys)
    found = {}
    for row in pa.RecordBatchReader.from_stream(answer).read_all().to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if key in wanted:
            found[key] = Published(row.get("owner"), row.get("publication"))
    return found


def _check_owners(batch: Sequence[Publication], published: Mapping[AssetKey, Published]) -> None:
    """Refuse an asset whose key's row names another owner than the asset's own.

    Raises
    ------
    LakeKeyConflictError
        Naming the key and both owners.
    """
    for entry in batch:
        row = published.get(entry.key)
        if entry.owner is None or row is None or row.owner is None or row.owner == entry.owner:
            continue
        raise LakeKeyConflictError(
            f"lake key {'/'.join(entry.key)} already holds {row.owner}; {entry.owner} is not "
            "written over it: run the flow again (each input then gets a distinct key) or "
            "remove that asset first"
        )


def publications_predicate(publications: Iterable[str]) -> str:
    """The SQL condition of the rows of these publications."""
    return f"publication IN ({', '.join(_quote(p) for p in sorted(publications))})"


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
        f"({key_predicate(e.key)} AND publication IS NULL)"
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


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def key_predicate(key: AssetKey) -> str:
    """The SQL condition of one asset's rows."""
    return " AND ".join(f"{c} = {_quote(v)}" for c, v in zip(KEY_COLUMNS, key, strict=True))


def _predicate(batch: Sequence[Publication]) -> str:
    """The rows these assets own: one ``(source AND dataset_id AND asset_id)`` per asset."""
    return " OR ".join(f"({key_predicate(e.key)})" for e in batch)


def _combined_units(batch: Sequence[Publication], ids: Mapping[AssetKey, str]) -> pa.Table:
    """The assets' units as one table, on the union of their columns, with publication ids."""
    tables = [
        _with_publication(_lake_types(entry.units), ids[entry.key])
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


def _lake_types(table: pa.Table) -> pa.Table:
    """Give attribute columns their lake types: no null-typed column, integers as float64.

    Delta has no null type (a column whose every value is missing carries no type), and an
    attribute whose values are whole numbers in one asset and fractions in another must
    land in one column: attribute integers are stored as float64 (exact up to 2**53). The
    fixed columns keep their own types.
    """
    table = table.replace_schema_metadata(None)
    for index in reversed(range(table.num_columns)):
        field = table.schema.field(index)
        if field.name in UNITS_SCHEMA.names:
            continue
        if pa.types.is_null(field.type):
            table = table.remove_column(index)
        elif pa.types.is_integer(field.type):
            column = pc.cast(table.column(index), pa.float64())
            table = table.set_column(index, pa.field(field.name, pa.float64()), column)
    return table


def _conform(data: pa.Table, table: DeltaTable | None, uri: str) -> pa.Table:
    """Cast columns the table already has to its types, refusing any lossy cast.

    delta-rs would cast on its own, truncating 1.5 into an int64 column: do it here, safely.
    """
    if table is None:
        return data
    existing = pa.schema(table.schema().to_arrow())
    for index, field in enumerate(data.schema):
        if field.name not in existing.names:
            continue
        target = existing.field(field.name).type
        if field.type.equals(target):
            continue
        try:
            column = pc.cast(data.column(index), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise LakeSchemaError(
                f"column {field.name!r} of {uri} holds {target}, but the assets being "
                f"published have {field.type} values that do not fit ({error}). Rename the "
                "attribute or convert it when loading so every source agrees on its type"
            ) from error
        data = data.set_column(index, pa.field(field.name, target), column)
    return data


def publish_hooks() -> PostCommitHookProperties:
    """What runs after each publishing commit: checkpoints, but no expired-log cleanup.

    delta-rs's cleanup lists and stats the whole ``_delta_log`` folder after every commit,
    a cost that grows with each version (on a local disk, one commit at 5,000 versions took
    ~90 ms with it and ~45 ms without); :func:`compact` cleans the log instead.
    """
    from deltalake import PostCommitHookProperties

    return PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


def retrying(action: Callable[[], _T], what: str, attempts: int) -> _T:
    """Run ``action``, retrying commit conflicts with exponential backoff and jitter."""
    from deltalake.exceptions import DeltaError

    attempt = 1
    while True:
        try:
            return action()
        except DeltaError as error:
            if not _is_conflict(error):
                raise
            if attempt >= attempts:
                raise LakeCommitError(
                    f"{what}: the commit still conflicted with other writers after "
                    f"{attempts} attempts ({error}); the table is unchanged, try again"
                ) from error
        time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
        attempt += 1


def _is_conflict(error: Exception) -> bool:
    from deltalake.exceptions import CommitFailedError

    text = str(error).lower()
    return isinstance(error, CommitFailedError) or any(
        word in text for word in ("conflict", "already exists", "changed since")
    )


def commit_info(uri: str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` of one version, read from its log file; None once it is cleaned.

    Read with pyarrow rather than ``DeltaTable.history``, which holds the GIL while it
    waits on the network (every other thread of the process stops meanwhile).
    """
    path = storage.join(uri, "_delta_log", f"{version:020d}.json")
    try:
        lines = storage.get_bytes(path).splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        info = json.loads(line).get("commitInfo")
        if info is not None:
            return dict(info)
    return None


def _assets_rows(
    batch: Sequence[Publication],
    version: int | None,
    run: str | None,
    ids: Mapping[AssetKey, str],
    replaced: Mapping[AssetKey, Published],
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
        footer = (entry.units.schema.metadata or {}) if entry.units is not None else {}
        rows.append(
            {
                **dict(zip(KEY_COLUMNS, entry.key, strict=True)),
                "content_id": given.get("content_id"),
                "listed_id": given.get("listed_id"),
                "status": str(manifest.get("status", "ok")),
                "rows": entry.units.num_rows if entry.units is not None else None,
                "manifest": json.dumps(manifest, allow_nan=False, default=str),
                "units_metadata": footer[_FOOTER_KEY].decode() if _FOOTER_KEY in footer else None,
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


def assets_index(lake_root: str | os.PathLike[str]) -> dict[AssetKey, AssetState]:
    """Every asset the lake records, read in one scan of the assets table.

    Returns
    -------
    dict
        ``(source, dataset_id, asset_id)`` -> :class:`AssetState` (``content_id``,
        ``listed_id``, ``status``, ``version``, ``rows``); empty for a lake with no assets
        table.
    """
    table = open_table(assets_uri(lake_root))
    if table is None:
        return {}
    columns = [*KEY_COLUMNS, "content_id", "listed_id", "status", "version", "rows"]
    data = table.to_pyarrow_table(columns=columns).to_pydict()
    return {
        (s, d, a): AssetState(c, li, st, v, r)
        for s, d, a, c, li, st, v, r in zip(*(data[name] for name in columns), strict=True)
    }


class AssetRecord(NamedTuple):
    """An asset's row as a publication left it (see :func:`asset_records`)."""

    status: str
    version: int | None
    manifest: dict[str, Any]


def asset_records(
    lake_root: str | os.PathLike[str], keys: Iterable[AssetKey]
) -> dict[AssetKey, AssetRecord]:
    """The rows of the given assets, manifests included; an asset without a row is left out."""
    import pyarrow.dataset as ds

    wanted = set(keys)
    table = open_table(assets_uri(lake_root))
    if table is None or not wanted:
        return {}
    data = table.to_pyarrow_dataset().to_table(
        columns=[*KEY_COLUMNS, "status", "version", "manifest"],
        filter=ds.field("asset_id").isin(sorted({key[2] for key in wanted})),
    )
    records = {}
    for row in data.to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if key in wanted:
            records[key] = AssetRecord(row["status"], row["version"], json.loads(row["manifest"]))
    return records
