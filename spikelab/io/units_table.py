"""Parquet unit tables: one row per unit, spike times as a list column, metadata in the footer."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, TypeGuard

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from spikelab.io import storage
from spikelab.io.brain_columns import (
    ATLAS_ID_ATTRIBUTE,
    QUALITY_SOURCES,
    REGION_FIELDS,
    default_mapper,
    mapping_provenance,
    quality_column,
    region_columns,
)
from spikelab.io.json_codec import decode, encode
from spikelab.spikedata import SpikeData

SCHEMA_VERSION = "1"
METADATA_KEY = b"spikelab"
# Attributes with a column of their own; any other scalar attribute gets one too.
_STRUCTURAL = ("unit_id", "electrode", "location", "location_label", "group_name")
_FIXED_COLUMNS = frozenset(
    {
        "source",
        "dataset_id",
        "asset_id",
        "unit_index",
        "unit_id",
        "n_spikes",
        "firing_rate_hz",
        "spike_times_ms",
        "location_x",
        "location_y",
        "location_z",
        "location_label",
        "group_name",
        "electrode",
        "publication",
        "quality",
        *(name for name, _ in REGION_FIELDS),
    }
)
_SCALARS = (bool, int, float, str)
_QUALITY_NAMES = frozenset(QUALITY_SOURCES)
# IBL's ``label`` is a number (the fraction of QC metrics passed), Phy's a word: a lake may
# hold both, so a numeric ``label`` has a column of its own.
NUMERIC_LABEL_COLUMN = "qc_label"


def write_units_table(
    sd: SpikeData,
    dest: str | os.PathLike[str],
    *,
    source: str,
    dataset_id: str,
    asset_id: str,
) -> dict[str, Any]:
    """Write ``sd`` as a Parquet units table (local path or ``s3://`` URL), atomically.

    Columns: ``source``, ``dataset_id``, ``asset_id``, ``unit_index``, ``unit_id`` (text),
    ``n_spikes``, ``firing_rate_hz``, ``spike_times_ms`` (list of float64, built from one
    flat array and its offsets), ``location_x|y|z``, ``location_label``, ``group_name``,
    ``electrode``, then one column per other scalar neuron attribute (an attribute whose
    name is taken gets an ``attr_`` prefix). Length, start time and the metadata are kept
    in the file's key-value metadata.

    An attribute that cannot be a column never stops the write: array-valued attributes,
    bytes, other objects, values of several types across units, and coordinates that are
    not numbers (a region name in ``location`` gives null ``location_x|y|z``) are left out
    and listed in ``skipped_columns``.

    Returns
    -------
    dict
        ``path``, ``sha256`` and ``rows`` of the written file, and ``skipped_columns``:
        ``{attribute name: reason}`` for each attribute left out (empty when none).
    """
    table = units_arrow_table(sd, source=source, dataset_id=dataset_id, asset_id=asset_id)
    # Spike times are nearly all distinct: a dictionary would only cost time.
    text_like = [name for name in table.column_names if name != "spike_times_ms"]
    with storage.open_output(dest) as handle, _HashingWriter(handle) as sink:
        pq.write_table(table, sink, use_dictionary=text_like)
    return {
        "path": str(dest),
        "sha256": sink.hexdigest(),
        "rows": table.num_rows,
        "skipped_columns": skipped_columns(table),
    }


class _HashingWriter:
    """Pass bytes on to a binary file while a helper thread takes their sha256.

    hashlib releases the GIL on large buffers, so the hash of one piece is taken while
    the Parquet writer encodes the next.
    """

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._sha256 = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._hashing: Future[None] | None = None
        self.closed = False

    def __enter__(self) -> _HashingWriter:
        return self

    def __exit__(self, *error: object) -> None:
        self.close()

    def write(self, data: bytes) -> int:
        data = data if isinstance(data, bytes) else bytes(data)  # the hash thread keeps it
        if self._hashing is not None:
            self._hashing.result()  # one piece at a time: the hash stays in order
        self._hashing = self._pool.submit(self._sha256.update, data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self._handle.tell()

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        if not self.closed:
            if self._hashing is not None:
                self._hashing.result()
            self._pool.shutdown()
            self.closed = True

    def hexdigest(self) -> str:
        """The sha256 of everything written (once closed)."""
        return self._sha256.hexdigest()


def units_arrow_table(sd: SpikeData, *, source: str, dataset_id: str, asset_id: str) -> pa.Table:
    """Build the units table in memory (see :func:`write_units_table`).

    Attributes that cannot become a column are left out and listed, with the reason, under
    ``skipped_columns`` in the footer (:data:`METADATA_KEY` of the schema metadata).
    """
    attributes = sd.neuron_attributes or [{} for _ in range(sd.N)]
    counts = np.fromiter((t.size for t in sd.train), dtype=np.int64, count=sd.N)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    values = _end_to_end(sd.train)
    large = offsets[-1] > np.iinfo(np.int32).max
    list_type = pa.LargeListArray if large else pa.ListArray
    spike_times = list_type.from_arrays(
        pa.array(offsets, type=pa.int64() if large else pa.int32()), pa.array(values)
    )
    skipped: dict[str, str] = {}
    locations, dims = _location_columns(attributes, skipped)
    unit_ids = [entry.get("unit_id", index) for index, entry in enumerate(attributes)]
    columns: dict[str, pa.Array] = {
        "source": pa.array([source] * sd.N, pa.string()),
        "dataset_id": pa.array([dataset_id] * sd.N, pa.string()),
        "asset_id": pa.array([asset_id] * sd.N, pa.string()),
        "unit_index": pa.array(np.arange(sd.N, dtype=np.int32)),
        "unit_id": pa.array([None if u is None else _as_text(u) for u in unit_ids], pa.string()),
        "n_spikes": pa.array(counts),
        "firing_rate_hz": pa.array(sd.rates("Hz") if sd.N else np.empty(0)),
        "spike_times_ms": spike_times,
        "location_x": pa.array([xyz[0] for xyz in locations], pa.float64()),
        "location_y": pa.array([xyz[1] for xyz in locations], pa.float64()),
        "location_z": pa.array([xyz[2] for xyz in locations], pa.float64()),
        "location_label": _text_column(attributes, "location_label", skipped),
        "group_name": _text_column(attributes, "group_name", skipped),
        "electrode": _electrode_column(attributes, skipped),
    }
    attribute_columns = {}
    other_keys = {key for entry in attributes for key in entry} - set(_STRUCTURAL)
    for key in sorted(other_keys, key=str):
        column, reason = _attribute_column([entry.get(key) for entry in attributes])
        if column is None:
            skipped[str(key)] = reason
            continue
        name = f"attr_{key}" if key in _FIXED_COLUMNS else str(key)
        if key == "label" and not pa.types.is_string(column.type):
            name = NUMERIC_LABEL_COLUMN  # IBL's QC fraction beside Phy's text label, one lake
        columns[name] = column
        attribute_columns[name] = str(key)  # JSON keeps text keys as they are
    mapper = default_mapper()
    species = sd.metadata.get("species")
    columns.update(
        region_columns(
            columns["location_label"].to_pylist(),
            [entry.get(ATLAS_ID_ATTRIBUTE) for entry in attributes],
            species if isinstance(species, str) else None,
            mapper,
        )
    )
    columns["quality"] = quality_column(
        {name: columns[name].to_pylist() for name in columns if name in _QUALITY_NAMES}, sd.N
    )
    footer = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "dataset_id": dataset_id,
        "asset_id": asset_id,
        "n_units": sd.N,
        "length_ms": sd.length,
        "start_time_ms": sd.start_time,
        "sampling_rate_hz": _plain_rate(sd.metadata),
        "unit_id_is_int": all(_is_integer(u) for u in unit_ids),
        "location_dims": dims,
        "has_attributes": sd.neuron_attributes is not None,
        "attribute_columns": attribute_columns,
        "skipped_columns": skipped,
        "metadata": encode(sd.metadata),
        "regions": mapping_provenance(mapper),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(footer).encode()})


def skipped_columns(table: pa.Table) -> dict[str, str]:
    """The attributes :func:`units_arrow_table` left out of ``table``, each with its reason."""
    footer = json.loads((table.schema.metadata or {})[METADATA_KEY])
    return dict(footer.get("skipped_columns", {}))


def _end_to_end(trains: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Every train, one after the other, in one array.

    Trains that already lie end to end in one buffer (``SpikeData.from_flat`` makes them
    so) come back as a view of it, without copying ten million spikes.
    """
    spiking = [t for t in trains if t.size]  # an empty slice may point anywhere
    if not spiking:
        return np.empty(0, dtype=np.float64)
    base = spiking[0].base
    if isinstance(base, np.ndarray) and base.ndim == 1 and base.dtype == np.float64:
        addresses = [t.__array_interface__["data"][0] for t in spiking]
        ends = [a + t.nbytes for a, t in zip(addresses, spiking, strict=True)]
        if all(t.base is base for t in spiking) and addresses[1:] == ends[:-1]:
            first = (addresses[0] - base.__array_interface__["data"][0]) // base.itemsize
            return base[first : first + (ends[-1] - addresses[0]) // base.itemsize]
    return np.concatenate(spiking)


def read_units_table(path: str | os.PathLike[str]) -> SpikeData:
    """Restore the SpikeData a units table was written from.

    Trains, length, start time, metadata and scalar attributes come back as written
    (attributes whose value was None are absent).
    """
    table = pq.read_table(pa.BufferReader(storage.get_bytes(path)))
    raw_footer = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw_footer is None:
        raise ValueError(f"{path} is not a spikelab units table (no {METADATA_KEY!r} metadata)")
    footer = json.loads(raw_footer)
    times = table.column("spike_times_ms").combine_chunks()
    offsets = times.offsets.to_numpy()
    values = times.values.to_numpy(zero_copy_only=False).copy()
    rows = table.drop_columns(["spike_times_ms"]).to_pylist()
    attributes = []
    for row, dims in zip(rows, footer["location_dims"], strict=True):
        entry: dict[str, Any] = {}
        unit_id = row["unit_id"]
        entry["unit_id"] = int(unit_id) if footer["unit_id_is_int"] else unit_id
        if row["electrode"] is not None:
            entry["electrode"] = row["electrode"]
        if dims:
            entry["location"] = [row[f"location_{axis}"] for axis in "xyz"][:dims]
        for name in ("location_label", "group_name"):
            if row[name] is not None:
                entry[name] = row[name]
        for column, key in footer["attribute_columns"].items():
            if row[column] is not None:
                entry[key] = row[column]
        attributes.append(entry)
    return SpikeData.from_flat(
        values,
        offsets[1:] - offsets[0],
        length=footer["length_ms"],
        start_time=footer["start_time_ms"],
        neuron_attributes=attributes if footer["has_attributes"] else None,
        metadata=decode(footer["metadata"]),
    )


class _NotUnderstood(ValueError):
    """A value that cannot go in its column; the message is the reason."""


def _location_columns(
    attributes: list[dict[str, Any]], skipped: dict[str, str]
) -> tuple[list[list[float | None]], list[int]]:
    """Each unit's ``[x, y, z]`` (None-padded) and how many coordinates it had.

    Coordinates are only ever numbers: when any unit's ``location`` is something else
    (a region name, bytes, nested lists ...), every unit gets null coordinates and
    ``location`` is reported in ``skipped``.
    """
    try:
        parsed = [_coordinates(entry.get("location")) for entry in attributes]
    except _NotUnderstood as error:
        skipped["location"] = f"{error}; location_x/y/z are null"
        parsed = [[] for _ in attributes]
    return [xyz + [None] * (3 - len(xyz)) for xyz in parsed], [len(xyz) for xyz in parsed]


def _coordinates(location: Any) -> list[float | None]:
    """Up to three numbers (None or NaN allowed inside); raise _NotUnderstood otherwise."""
    if location is None:
        return []
    if _is_number(location):
        return [float(location)]
    if isinstance(location, str | bytes) or not isinstance(location, Sequence | np.ndarray):
        raise _NotUnderstood(f"a location holds {_described(location)}, not coordinates")
    items = list(np.ravel(location)) if isinstance(location, np.ndarray) else list(location)
    if isinstance(location, np.ndarray) and location.ndim > 1:
        raise _NotUnderstood(f"a location has shape {location.shape}, not up to 3 numbers")
    if len(items) > 3:
        raise _NotUnderstood(f"a location has {len(items)} values, more than x, y, z")
    bad = [item for item in items if item is not None and not _is_number(item)]
    if bad:
        raise _NotUnderstood(f"a location holds {_described(bad[0])}, not a coordinate")
    return [None if item is None else float(item) for item in items]


def _is_number(value: Any) -> TypeGuard[numbers.Real]:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_missing(value: Any) -> bool:
    """None, or a float NaN (how pandas and HDF5 tables mark an empty cell)."""
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _described(value: Any) -> str:
    """Type and, for text and numbers, the value itself (no object addresses in reports)."""
    kind = type(value).__name__
    if not isinstance(value, str | bytes | numbers.Number):
        return f"a {kind}"
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _as_text(value: Any) -> str:
    """Text of an id or label: bytes are decoded as UTF-8 (undecodable bytes are replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _electrode_column(attributes: list[dict[str, Any]], skipped: dict[str, str]) -> pa.Array:
    """Channel numbers as int32; the column is null and reported when one is not a channel."""
    values = [entry.get("electrode") for entry in attributes]
    try:
        return pa.array([_channel_number(value) for value in values], pa.int32())
    except _NotUnderstood as error:
        skipped["electrode"] = f"{error}; the electrode column is null"
        return pa.nulls(len(values), pa.int32())


def _channel_number(value: Any) -> int | None:
    if _is_missing(value):
        return None
    if _is_integer(value) or (_is_number(value) and float(value).is_integer()):
        number = int(value)
        if -(2**31) <= number < 2**31:
            return number
    raise _NotUnderstood(f"an electrode holds {_described(value)}, not a channel number")


def _text_column(attributes: list[dict[str, Any]], key: str, skipped: dict[str, str]) -> pa.Array:
    """A text column (labels, names); null and reported when a value is not text or a number."""
    values = [entry.get(key) for entry in attributes]
    bad = [v for v in values if not (_is_missing(v) or isinstance(v, str | bytes | numbers.Real))]
    if bad:
        skipped[key] = f"it holds {_described(bad[0])}, not text"
        return pa.nulls(len(values), pa.string())
    return pa.array([None if _is_missing(v) else _as_text(v) for v in values], pa.string())


def _attribute_column(values: list[Any]) -> tuple[pa.Array | None, str]:
    """Build a scalar attribute's column, or return None and the reason it cannot be one.

    One kind per column: booleans, integers, numbers (integers and floats mixed) or text.
    Arrays, lists, mappings, bytes, other objects, and values of several kinds are left out.
    """
    plain = [v.item() if isinstance(v, np.generic) else v for v in values]
    present = [v for v in plain if v is not None]
    odd = [v for v in present if not isinstance(v, _SCALARS)]
    if odd:
        container = isinstance(odd[0], Sequence | np.ndarray | Mapping | set)
        if container and not isinstance(odd[0], bytes | bytearray):
            return None, f"it holds {_described(odd[0])}; only scalar attributes get a column"
        return None, f"it holds {_described(odd[0])}; only bool, int, float or str fit"
    kinds = {type(v) for v in present}
    if kinds == {int, float}:
        plain = [None if v is None else float(v) for v in plain]
    elif len(kinds) > 1:
        names = ", ".join(sorted(kind.__name__ for kind in kinds))
        return None, f"its values mix types across units ({names})"
    try:
        return pa.array(plain), ""
    except (pa.ArrowException, OverflowError, UnicodeError) as error:
        return None, f"it cannot be stored in Parquet ({type(error).__name__}: {error})"


def _plain_rate(metadata: dict[str, Any]) -> float | None:
    """The sampling rate for the footer; None when absent or not one number."""
    rate = metadata.get("sampling_rate_hz") or metadata.get("fs_Hz")
    if isinstance(rate, np.ndarray) and rate.size == 1:
        rate = rate.item()
    return float(rate) if _is_number(rate) else None
