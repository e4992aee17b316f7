"""The assets table read by key: what the lake holds for each asset, and who owns it.

The assets table has one row per asset (see :mod:`spikelab.io.delta_lake`): the flows read
it whole to skip assets that have not changed (:func:`assets_index`), journal repair reads
the rows of a few keys (:func:`asset_records`), and publishing reads the rows it is about to
replace to refuse a key another input owns (:func:`check_owners`): a writer from its
:class:`AssetsIndex`, which reads each data file once, or by key (:func:`published_rows`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from spikelab.exceptions import LakeKeyConflictError
from spikelab.io import storage
from spikelab.io.delta_tables import KEY_COLUMNS, AssetKey, open_table, quote
from spikelab.io.lake import Lake, LakeLike

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from spikelab.io.delta_lake import Publication


class AssetState(NamedTuple):
    """What the lake holds for one asset (see :func:`assets_index`)."""

    content_id: str | None
    listed_id: str | None
    status: str
    version: int | None
    rows: int | None = None


def assets_index(lake_root: LakeLike) -> dict[AssetKey, AssetState]:
    """Every asset the lake records, read in one scan of the assets table.

    Returns
    -------
    dict
        ``(source, dataset_id, asset_id)`` -> :class:`AssetState` (``content_id``,
        ``listed_id``, ``status``, ``version``, ``rows``); empty for a lake with no assets
        table.
    """
    table = open_table(Lake.of(lake_root).assets_uri)
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


def asset_records(lake_root: LakeLike, keys: Iterable[AssetKey]) -> dict[AssetKey, AssetRecord]:
    """The rows of the given assets, manifests included; an asset without a row is left out."""
    import pyarrow.dataset as ds

    wanted = set(keys)
    table = open_table(Lake.of(lake_root).assets_uri)
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


class Published(NamedTuple):
    """An assets row as it stands before a publication replaces it."""

    owner: str | None
    publication: str | None


def published_rows(
    table: DeltaTable | None, names: Sequence[str], keys: Sequence[AssetKey]
) -> dict[AssetKey, Published]:
    """``keys``' rows in the assets table ``table`` (as loaded, columns ``names``): owners.

    Read by delta-rs's own engine, which skips the files whose statistics rule the asset
    ids out (a pyarrow dataset opens every file: a cost that grows with each commit).
    """
    from deltalake import QueryBuilder

    if table is None or not keys:
        return {}
    extra = [name for name in ("owner", "publication") if name in names]
    ids = ", ".join(quote(asset_id) for asset_id in sorted({key[2] for key in keys}))
    answer = (
        QueryBuilder()
        .register("assets", table)
        .execute(
            f"SELECT {', '.join([*KEY_COLUMNS, *extra])} FROM assets WHERE asset_id IN ({ids})"
        )
    )
    return _published(pa.RecordBatchReader.from_stream(answer).read_all(), set(keys))


def _published(data: pa.Table, wanted: set[AssetKey]) -> dict[AssetKey, Published]:
    """The rows of ``data`` whose key is in ``wanted``, by key (owner, publication if there)."""
    found = {}
    for row in data.to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if key in wanted:
            found[key] = Published(row.get("owner"), row.get("publication"))
    return found


class AssetsIndex:
    """The assets table's owners and publications, kept file by file by one writer.

    A data file never changes once written, so each file of the table is read once (and
    the file of the writer's own commit not at all: its rows are the ones just written),
    instead of the whole table being read by key at every commit. Each file's rows are
    kept as Arrow columns (key, owner, publication: under 200 bytes an asset, no Python
    object per row), and a commit looks up only its own keys. Tables whose files do not
    hold their rows as they are (a reader feature such as deletion vectors) are read by
    key as before (:func:`published_rows`).
    """

    def __init__(self) -> None:
        self._files: dict[str, pa.Table] = {}  # location -> its rows, OWNER_SCHEMA
        self._seen: tuple[int, frozenset[str]] | None = None  # version, files last matched

    def rows(
        self, table: DeltaTable | None, names: Sequence[str], keys: Sequence[AssetKey]
    ) -> dict[AssetKey, Published]:
        """``keys``' rows in ``table`` (as loaded, columns ``names``), as published_rows."""
        if table is None or not keys:
            return {}
        if table.protocol().min_reader_version > 1:
            self._seen = None
            return published_rows(table, names, keys)
        files = frozenset(table.file_uris())
        self._files = {where: rows for where, rows in self._files.items() if where in files}
        for location in sorted(files - self._files.keys()):
            self._files[location] = _owner_columns(
                storage.read_parquet(location, OWNER_SCHEMA.names)
            )
        self._seen = (table.version(), files)
        return _lookup(self._files.values(), keys)

    def learn(self, table: DeltaTable, written: pa.Table) -> None:
        """Take ``written`` as the rows of the one file ``table``'s newest commit added.

        Only when that commit is this writer's (it follows the version :meth:`rows` last
        read) and added a single file, and the files it removed held none but the keys it
        wrote (else delta-rs also added those files' other rows, rewritten): a file it
        cannot tell is read at the next commit.
        """
        if self._seen is None or table.version() != self._seen[0] + 1:
            return
        files = frozenset(table.file_uris())
        added = files - self._seen[1]
        rows = _owner_columns(written)
        removed = [self._files[where] for where in self._seen[1] - files]
        if len(added) == 1 and _keys(removed) <= _keys([rows]):
            self._files[next(iter(added))] = rows


OWNER_SCHEMA = pa.schema([(name, pa.string()) for name in (*KEY_COLUMNS, "owner", "publication")])


def _owner_columns(data: pa.Table) -> pa.Table:
    """``data``'s key, owner and publication columns as OWNER_SCHEMA (nulls where absent)."""
    return pa.table(
        [
            data[name].cast(pa.string()) if name in data.schema.names else pa.nulls(len(data))
            for name in OWNER_SCHEMA.names
        ],
        schema=OWNER_SCHEMA,
    ).combine_chunks()


def _keys(tables: Iterable[pa.Table]) -> set[AssetKey]:
    """The keys of the rows of ``tables`` (OWNER_SCHEMA)."""
    found: set[AssetKey] = set()
    for data in tables:
        found.update(zip(*(data[name].to_pylist() for name in KEY_COLUMNS), strict=True))
    return found


def _lookup(tables: Iterable[pa.Table], keys: Sequence[AssetKey]) -> dict[AssetKey, Published]:
    """The rows of ``keys`` among ``tables`` (OWNER_SCHEMA), by key."""
    import pyarrow.compute as pc

    wanted = set(keys)
    ids = pa.array(sorted({key[2] for key in wanted}), pa.string())
    found = {}
    for data in tables:
        found.update(_published(data.filter(pc.is_in(data["asset_id"], value_set=ids)), wanted))
    return found


def check_owners(batch: Sequence[Publication], published: Mapping[AssetKey, Published]) -> None:
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
