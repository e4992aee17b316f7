"""Map every unit of a lake onto brain regions again, without loading any source file.

After the alias table changed (a curator added ``PFC-L5 -> PLv5``, say), or for a lake
written before the region columns existed, :func:`remap` recomputes ``region_id``,
``region``, ``region_beryl``, ``region_cosmos``, ``region_match`` and ``quality`` of every
units row from the raw columns the rows keep (``location_label``, ``atlas_id``, the quality
labels) and the subject's species (from the asset's manifest in the assets table), and
writes the units table again in one commit. It also adds what older lakes lack: the
``regions`` table, and a sessions row for every asset that has none.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from spikelab.io import brain_columns
from spikelab.io.delta_lake import (
    COMMIT_TAG,
    KEY_COLUMNS,
    SESSIONS_TABLE,
    AssetKey,
    LakeWriter,
    assets_uri,
    column_names,
    open_table,
    publish_hooks,
    retrying,
    table_uri,
    units_uri,
)

_MAX_ATTEMPTS = 8
_BATCH_ROWS = 65_536
_RAW_QUALITY = "attr_quality"


def remap(
    lake_root: str | os.PathLike[str],
    *,
    aliases: str | os.PathLike[str] | None = None,
    max_attempts: int = _MAX_ATTEMPTS,
) -> dict[str, Any]:
    """Recompute the region and quality columns of every units row, in one commit.

    Parameters
    ----------
    lake_root : str or PathLike
        Lake root.
    aliases : str or PathLike, optional
        A user alias file added to the packaged one (else ``$SPIKELAB_REGION_ALIASES``).
    max_attempts : int, default: 8
        The rewrite is retried this many times when publishing runs meanwhile.

    Returns
    -------
    dict
        ``rows`` (units rows rewritten), ``changed`` (rows whose region or quality
        changed), ``version`` (the units table's new version, None for an empty lake),
        ``sessions_added`` and ``aliases_version``.

    Raises
    ------
    ImportError
        Without iblatlas, the source of the ontology.
    """
    from spikelab.brain_regions import AliasTable, RegionMapper

    tree = brain_columns.ontology()
    if tree is None:
        raise ImportError(
            "spikelab lake remap needs the Allen CCF ontology from iblatlas: "
            "pip install 'spikelab[ibl]'"
        )
    mapper = RegionMapper(tree, AliasTable.load(aliases))
    writer = LakeWriter(lake_root)
    tag = {"commit": uuid.uuid4().hex, "assets": 0, "remap": mapper.aliases.version}
    writer.ensure_regions(tag, max_attempts, refresh=True)  # the ontology of this iblatlas
    report: dict[str, Any] = {
        "rows": 0,
        "changed": 0,
        "version": None,
        "aliases_version": mapper.aliases.version,
    }
    if open_table(units_uri(lake_root)) is not None:
        species = _species_by_asset(lake_root)
        report.update(_rewrite_units(writer, mapper, species, tag, max_attempts))
    report["sessions_added"] = _add_missing_sessions(writer, tag, max_attempts)
    return report


def _rewrite_units(
    writer: LakeWriter,
    mapper: Any,
    species: dict[AssetKey, str | None],
    tag: dict[str, Any],
    attempts: int,
) -> dict[str, Any]:
    """Overwrite the units table with its rows, region and quality columns recomputed."""
    from deltalake import CommitProperties, write_deltalake

    uri = units_uri(writer.root)
    counts = {"rows": 0, "changed": 0}

    def rewrite() -> int:
        table = writer._latest(uri)
        if table is None:
            raise FileNotFoundError(f"{uri}: the units table disappeared while it was remapped")
        source = table.to_pyarrow_dataset()
        schema = _output_schema(source.schema)
        counts.update(rows=0, changed=0)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in source.to_batches(batch_size=_BATCH_ROWS):
                out, changed = _remapped(batch, schema, mapper, species)
                counts["rows"] += batch.num_rows
                counts["changed"] += changed
                yield out

        write_deltalake(
            table,
            pa.RecordBatchReader.from_batches(schema, batches()),
            mode="overwrite",
            schema_mode="merge",
            commit_properties=CommitProperties(custom_metadata={COMMIT_TAG: tag}),
            post_commithook_properties=publish_hooks(),
        )
        return table.version()

    version = retrying(rewrite, f"remapping {uri}", attempts)
    return {**counts, "version": version}


def _output_schema(schema: pa.Schema) -> pa.Schema:
    """The table's schema with the region and quality columns (a raw ``quality`` kept apart)."""
    legacy = "region_match" not in schema.names
    fields = []
    for field in schema:
        if legacy and field.name == "quality":
            if _RAW_QUALITY not in schema.names:
                fields.append(pa.field(_RAW_QUALITY, pa.string()))
            continue
        fields.append(field)
    names = {field.name for field in fields}
    for name, kind in (*brain_columns.REGION_FIELDS, brain_columns.QUALITY_FIELD):
        if name not in names:
            fields.append(pa.field(name, kind))
    return pa.schema(fields)


def _remapped(
    batch: pa.RecordBatch, schema: pa.Schema, mapper: Any, species: dict[AssetKey, str | None]
) -> tuple[pa.RecordBatch, int]:
    """One batch with its region and quality columns computed again; how many rows changed."""
    legacy = "region_match" not in batch.schema.names
    n = batch.num_rows
    labels = batch.column("location_label").to_pylist()
    atlas = batch.column("atlas_id").to_pylist() if "atlas_id" in batch.schema.names else None
    keys = list(zip(*(batch.column(c).to_pylist() for c in KEY_COLUMNS), strict=True))
    rows_of: dict[str | None, list[int]] = {}
    for index, key in enumerate(keys):
        rows_of.setdefault(species.get(key), []).append(index)
    region: dict[str, list[Any]] = {name: [None] * n for name, _ in brain_columns.REGION_FIELDS}
    for kind, indices in rows_of.items():
        columns = brain_columns.region_columns(
            [labels[i] for i in indices],
            [atlas[i] for i in indices] if atlas is not None else None,
            kind,
            mapper,
        )
        for name, values in columns.items():
            for i, value in zip(indices, values.to_pylist(), strict=True):
                region[name][i] = value
    raw_quality = "quality" if legacy and "quality" in batch.schema.names else _RAW_QUALITY
    raw = {
        name: batch.column(raw_quality if name == _RAW_QUALITY else name).to_pylist()
        for name in brain_columns.QUALITY_SOURCES
        if (raw_quality if name == _RAW_QUALITY else name) in batch.schema.names
        and name != "quality"
    }
    computed = {
        **{name: pa.array(region[name], kind) for name, kind in brain_columns.REGION_FIELDS},
        "quality": brain_columns.quality_column(raw, n),
    }
    if legacy and "quality" in batch.schema.names and _RAW_QUALITY not in batch.schema.names:
        computed[_RAW_QUALITY] = pc.cast(batch.column("quality"), pa.string())
    changed = _changed_rows(batch, computed, legacy)
    arrays = []
    for field in schema:
        if field.name in computed:
            arrays.append(pc.cast(computed[field.name], field.type))
        elif field.name in batch.schema.names:
            arrays.append(batch.column(field.name))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema), changed


def _changed_rows(batch: pa.RecordBatch, computed: dict[str, pa.Array], legacy: bool) -> int:
    """How many rows get another region or quality than they had."""
    names = [name for name, _ in brain_columns.REGION_FIELDS] + ["quality"]
    if legacy:
        return batch.num_rows
    before = zip(*(batch.column(name).to_pylist() for name in names), strict=True)
    after = zip(*(computed[name].to_pylist() for name in names), strict=True)
    return sum(old != new for old, new in zip(before, after, strict=True))


def _species_by_asset(lake_root: str | os.PathLike[str]) -> dict[AssetKey, str | None]:
    """Each asset's species: from its manifest's metadata in the assets table."""
    from spikelab.session_fields import normalise_species

    assets = open_table(assets_uri(lake_root))
    if assets is None:
        return {}
    data = assets.to_pyarrow_table(columns=[*KEY_COLUMNS, "manifest"]).to_pylist()
    species = {}
    for row in data:
        metadata = (json.loads(row["manifest"] or "{}").get("metadata")) or {}
        value = metadata.get("species") if isinstance(metadata, dict) else None
        key = (row["source"], row["dataset_id"], row["asset_id"])
        species[key] = normalise_species(value) if isinstance(value, str) else None
    return species


def _add_missing_sessions(writer: LakeWriter, tag: dict[str, Any], attempts: int) -> int:
    """Append a sessions row for every published asset that has none; how many."""
    assets = open_table(assets_uri(writer.root))
    if assets is None:
        return 0
    names = column_names(assets)
    wanted = [*KEY_COLUMNS, "status", "rows", "manifest"]
    wanted += ["publication"] if "publication" in names else []
    sessions = open_table(table_uri(writer.root, SESSIONS_TABLE))
    have = set()
    if sessions is not None:
        keys = sessions.to_pyarrow_table(columns=list(KEY_COLUMNS)).to_pylist()
        have = {(r["source"], r["dataset_id"], r["asset_id"]) for r in keys}
    rows = []
    for row in assets.to_pyarrow_table(columns=wanted).to_pylist():
        key = (row["source"], row["dataset_id"], row["asset_id"])
        if key in have or row["status"] != "ok":
            continue
        manifest = json.loads(row["manifest"] or "{}")
        rows.append(
            {
                **brain_columns.session_row(key, manifest, int(row["rows"] or 0)),
                "publication": row.get("publication"),
            }
        )
    if not rows:
        return 0
    schema = brain_columns.SESSIONS_SCHEMA.append(pa.field("publication", pa.string()))
    uri = table_uri(writer.root, SESSIONS_TABLE)
    writer._commit(uri, pa.Table.from_pylist(rows, schema=schema), None, tag, attempts)
    return len(rows)
