"""The lake's answers about brains: region, quality and session columns from what loaders give.

Every unit row carries, beside its raw ``location_label``, the Allen CCF 2017 structure it
was mapped to (``region_id``, ``region``, ``region_beryl``, ``region_cosmos``) and how
(``region_match``: see :class:`spikelab.brain_regions.RegionMapper`), and one ``quality``
scale (``good``, ``mua``, ``noise`` or null; see :func:`spikelab.unit_quality.normalise_quality`).
The mapper is built once per process from iblatlas's ontology and the alias tables
(packaged, then ``$SPIKELAB_REGION_ALIASES``); without iblatlas the region columns stay
null and ``spikelab lake remap`` fills them later.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spikelab.session_fields import age_days, normalise_sex, normalise_species
from spikelab.unit_quality import normalise_quality

if TYPE_CHECKING:
    from spikelab.brain_regions import RegionMapper

REGION_FIELDS = (
    ("region_id", pa.int64()),
    ("region", pa.string()),
    ("region_beryl", pa.string()),
    ("region_cosmos", pa.string()),
    ("region_match", pa.string()),
)
QUALITY_FIELD = ("quality", pa.string())
# Unit attributes that hold a quality label, in the order they are asked: NWB's ``quality``
# (kept as ``attr_quality``: ``quality`` is the lake's own scale), Phy's ``group`` and
# ``KSLabel`` and ``label`` as the loader names it, IBL's ``label`` (the fraction of
# single-unit metrics passed, kept as ``qc_label``).
QUALITY_SOURCES = ("attr_quality", "quality", "group", "KSLabel", "label", "qc_label")
ATLAS_ID_ATTRIBUTE = "atlas_id"
SESSIONS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("dataset_id", pa.string()),
        ("asset_id", pa.string()),
        ("session_id", pa.string()),
        ("session_start", pa.timestamp("us", tz="UTC")),
        ("subject_id", pa.string()),
        ("species", pa.string()),
        ("sex", pa.string()),
        ("age", pa.string()),
        ("age_days", pa.float64()),
        ("genotype", pa.string()),
        ("strain", pa.string()),
        ("lab", pa.string()),
        ("institution", pa.string()),
        ("session_description", pa.string()),
        ("duration_s", pa.float64()),
        ("units", pa.int64()),
        ("devices", pa.list_(pa.string())),
        ("eid", pa.string()),
        ("pid", pa.string()),
        ("region_aliases", pa.string()),
    ]
)


@functools.cache
def ontology() -> pa.Table | None:
    """The Allen CCF 2017 structure tree (once per process); None without iblatlas."""
    try:
        from spikelab.brain_regions import ontology_table

        return ontology_table()
    except ImportError:
        return None


@functools.cache
def default_mapper() -> RegionMapper | None:
    """The process's region mapper (packaged and ``$SPIKELAB_REGION_ALIASES`` aliases)."""
    from spikelab.brain_regions import AliasTable, RegionMapper

    tree = ontology()
    return None if tree is None else RegionMapper(tree, AliasTable.load())


def mapping_provenance(mapper: RegionMapper | None) -> dict[str, Any] | None:
    """What mapped an asset's regions: the ontology and the alias tables, with versions."""
    tree = ontology()
    if mapper is None or tree is None:
        return None
    return {
        "ontology": {k.decode(): v.decode() for k, v in (tree.schema.metadata or {}).items()},
        "aliases_version": mapper.aliases.version,
        "aliases": list(mapper.aliases.sources),
    }


def region_columns(
    labels: Sequence[str | None],
    atlas_ids: Sequence[Any] | None,
    species: str | None,
    mapper: RegionMapper | None,
) -> dict[str, pa.Array]:
    """The region columns of units with these labels (and atlas ids, which win when known).

    Without a mapper every region column is null (not yet mapped).
    """
    n = len(labels)
    if mapper is None:
        return {name: pa.nulls(n, kind) for name, kind in REGION_FIELDS}
    by_label = mapper.map_labels(set(labels), species)
    matches = []
    for index, label in enumerate(labels):
        atlas = _atlas_id(atlas_ids[index]) if atlas_ids is not None else None
        match = mapper.map_atlas_id(atlas) if atlas is not None else None
        matches.append(match if match is not None and match.mapped else by_label[label])
    return {
        name: pa.array([getattr(match, name) for match in matches], kind)
        for name, kind in REGION_FIELDS
    }


def _atlas_id(value: Any) -> int | None:
    """An Allen structure id from a unit attribute; None when missing or not a whole number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != int(number) or int(number) == 0:
        return None
    return int(number)


def quality_column(raw: Mapping[str, Sequence[Any]], n: int) -> pa.Array:
    """One quality per unit from the first label column (:data:`QUALITY_SOURCES`) that says one."""
    values: list[str | None] = [None] * n
    for name in QUALITY_SOURCES:
        column = raw.get(name)
        if column is None:
            continue
        for index, value in enumerate(column):
            if values[index] is None:
                values[index] = normalise_quality(value)
    return pa.array(values, pa.string())


def session_row(
    key: tuple[str, str, str],
    manifest: Mapping[str, Any],
    units: int,
) -> dict[str, Any]:
    """One sessions row from an asset's manifest (its metadata) and its unit count."""
    metadata = manifest.get("metadata") or {}
    spikedata = manifest.get("spikedata") or {}
    given = manifest.get("input") or {}
    nested = metadata.get("subject")
    subject: Mapping[str, Any] = nested if isinstance(nested, dict) else {}

    def text(*names: str) -> str | None:
        for name in names:
            value = metadata.get(name, subject.get(name))
            if value not in (None, ""):
                return str(value)
        return None

    age = text("age")
    length = spikedata.get("length_ms")
    devices = metadata.get("device_names")
    return {
        **dict(zip(("source", "dataset_id", "asset_id"), key, strict=True)),
        "session_id": text("identifier", "session_id", "eid"),
        "session_start": _timestamp(text("session_start_time", "start_time")),
        "subject_id": text("subject_id", "subject"),
        "species": normalise_species(text("species")),
        "sex": normalise_sex(text("sex")),
        "age": age,
        "age_days": age_days(age),
        "genotype": text("genotype"),
        "strain": text("strain"),
        "lab": text("lab"),
        "institution": text("institution"),
        "session_description": text("session_description"),
        "duration_s": (
            metadata.get("duration_seconds")
            if isinstance(metadata.get("duration_seconds"), int | float)
            else (length / 1000 if isinstance(length, int | float) else None)
        ),
        "units": units,
        "devices": [str(d) for d in devices] if isinstance(devices, list) else None,
        "eid": text("eid") or (str(given["eid"]) if given.get("eid") else None),
        "pid": text("pid") or (str(given["pid"]) if given.get("pid") else None),
        "region_aliases": (manifest.get("regions") or {}).get("aliases_version"),
    }


def _timestamp(text: str | None) -> Any:
    """An aware UTC datetime from ISO 8601 text; None when it is not one."""
    from datetime import UTC, datetime

    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)


def sessions_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The sessions rows as a table of :data:`SESSIONS_SCHEMA`."""
    return pa.Table.from_pylist(list(rows), schema=SESSIONS_SCHEMA)
