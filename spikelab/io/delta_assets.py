"""The assets table read by key: what the lake holds for each asset, and who owns it.

The assets table has one row per asset (see :mod:`spikelab.io.delta_lake`): the flows read
it whole to skip assets that have not changed (:func:`assets_index`), journal repair reads
the rows of a few keys (:func:`asset_records`), and publishing reads the rows it is about to
replace (:func:`published_rows`) to refuse a key another input owns (:func:`check_owners`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from spikelab.exceptions import LakeKeyConflictError
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
    wanted = set(keys)
    found = {}
    for row in pa.RecordBatchReader.from_stream(answer).read_all().to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if key in wanted:
            found[key] = Published(row.get("owner"), row.get("publication"))
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
