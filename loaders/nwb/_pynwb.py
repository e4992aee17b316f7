"""Read an NWB file's Units, electrodes and file-level metadata through pynwb's objects."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.loaders.nwb._checks import (
    check_end_fits,
    check_unit_count,
    declared_length,
    decode_text,
    end_offsets,
    floats,
    obs_intervals,
    read_whole,
    refuse_oversized,
    whole_rows,
)
from spikelab.loaders.nwb._table import (
    ElectrodesColumns,
    NoSpikeTimes,
    UnitsColumns,
    first_rows,
    series_timing,
    spike_times_column,
)


def _pickled(data: Any) -> bool:
    """Whether a column is stored with the pickle codec (hdmf-zarr's object references).

    Decoding it would unpickle bytes from the file, which can run code: spikelab never does.
    """
    stored = getattr(data, "dataset", data)
    return any(
        getattr(f, "codec_id", None) == "pickle" for f in getattr(stored, "filters", None) or []
    )


def _names(values: NDArray[Any]) -> NDArray[Any] | None:
    """Text values as str, references as the referenced object's name; None for other kinds."""
    if values.dtype.kind in "biuf":
        return values
    if values.dtype.kind not in "OSU":
        return None
    named = [
        decode_text(v) if isinstance(v, bytes) else getattr(v, "name", v) for v in values.tolist()
    ]
    if not all(isinstance(v, str) for v in named):
        return None
    return np.array(named, dtype=object)


def _scalar_columns(source: str, by_name: dict[str, Any], n_units: int) -> dict[str, NDArray[Any]]:
    """The Units columns with one number, text or reference per unit, read whole."""
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    indexed = {c.target.name for c in by_name.values() if isinstance(c, VectorIndex)}
    scalars = {}
    for name, column in by_name.items():
        if isinstance(column, VectorIndex | DynamicTableRegion) or name in indexed:
            continue
        shape = getattr(column.data, "shape", None)
        if _pickled(column.data) or (shape is not None and len(shape) != 1):
            continue
        if declared_length(column.data) != n_units:
            continue
        refuse_oversized(source, name, column.data)
        values = _names(np.asarray(read_whole(column.data)))
        if values is not None:
            scalars[name] = values
    return scalars


def _spike_index(by_name: dict[str, Any]) -> Any | None:
    """The VectorIndex of the spike times column (see :func:`spike_times_column`)."""
    from hdmf.common.table import VectorIndex

    indexes = {
        column.target.name: column
        for column in by_name.values()
        if isinstance(column, VectorIndex) and column.name == f"{column.target.name}_index"
    }
    name = spike_times_column(indexes)
    return None if name is None else indexes[name]


def read_units(nwbfile: Any, source: str) -> UnitsColumns | NoSpikeTimes | None:
    """Read ``nwbfile.units`` as whole arrays; None when there is no Units table.

    Every column is checked against what the file declares before it is read (see
    :mod:`spikelab.loaders.nwb._checks`).
    """
    from hdmf.common.table import VectorIndex

    table = nwbfile.units
    if table is None:
        return None
    by_name = {column.name: column for column in table.columns}
    index = _spike_index(by_name)
    if index is None:
        return NoSpikeTimes(sorted({*by_name, "id"}))
    times_name, index_name = index.target.name, index.name
    n_units = declared_length(index.data)
    check_unit_count(source, "id", declared_length(table.id.data), index_name, n_units)
    refuse_oversized(source, "id", table.id.data)
    ends = end_offsets(source, index_name, index.data)
    check_end_fits(source, index_name, ends, times_name, declared_length(index.target.data))
    units = UnitsColumns(
        ids=np.asarray(read_whole(table.id.data)).reshape(-1),
        spike_times_s=floats(source, times_name, index.target.data),
        spike_ends=ends,
        scalars=_scalar_columns(source, by_name, n_units),
    )
    region = by_name.get("electrodes")
    if region is not None:
        n_electrodes = len(nwbfile.electrodes) if nwbfile.electrodes is not None else 0
        units.electrode_rows = first_rows(
            source,
            whole_rows(source, "electrodes", region.data),
            _ragged_index(source, by_name.get("electrodes_index"), index_name, n_units),
            n_units,
            n_electrodes,
        )
    intervals_index = by_name.get("obs_intervals_index")
    if isinstance(intervals_index, VectorIndex):
        units.obs_intervals_s = obs_intervals(
            source,
            intervals_index.target.data,
            _ragged_index(source, intervals_index, index_name, n_units),
        )
    return units


def _ragged_index(
    source: str, column: Any | None, index_name: str, n_units: int
) -> NDArray[np.int64] | None:
    """A Units ragged column's index (one end offset per unit); None when there is none."""
    if column is None:
        return None
    check_unit_count(source, index_name, n_units, column.name, declared_length(column.data))
    return end_offsets(source, column.name, column.data)


def read_electrodes(nwbfile: Any, source: str) -> ElectrodesColumns | None:
    """Read the electrodes table's ids, locations, group names and x/y/z."""
    table = nwbfile.electrodes
    if table is None:
        return None
    ids = whole_rows(source, "electrodes id", table.id.data)
    names = set(table.colnames)
    for name in names & {"location", "group_name", "group", "x", "y", "z"}:
        n_rows = declared_length(table[name].data)
        check_unit_count(source, "id", ids.size, name, n_rows, table="electrodes")

    def texts(name: str) -> list[str | None]:
        if name not in names:
            return [None] * ids.size
        return [
            decode_text(v) if isinstance(v, bytes) else str(v) for v in read_whole(table[name].data)
        ]

    group_names = texts("group_name")
    if "group_name" not in names and "group" in names and not _pickled(table["group"].data):
        group_names = [group.name for group in table["group"].data]
    xyz = None
    if {"x", "y", "z"} <= names:
        xyz = np.column_stack(
            [floats(source, f"electrodes {a}", table[a].data, "coordinates") for a in "xyz"]
        )
    return ElectrodesColumns(ids, texts("location"), group_names, xyz)


def read_metadata(nwbfile: Any) -> dict[str, Any]:
    """File-level metadata from the NWBFile object (dates as ISO strings)."""
    from pynwb.ecephys import ElectricalSeries

    subject = nwbfile.subject
    metadata: dict[str, Any] = {
        "identifier": nwbfile.identifier,
        "session_description": nwbfile.session_description,
        "session_start_time": _iso(nwbfile.session_start_time),
        "subject_id": getattr(subject, "subject_id", None),
        "species": getattr(subject, "species", None),
        "sex": getattr(subject, "sex", None),
        "age": getattr(subject, "age", None),
        "date_of_birth": _iso(getattr(subject, "date_of_birth", None)),
        "device_names": sorted(nwbfile.devices.keys()),
        "sampling_rate_hz": None,
        "duration_seconds": None,
    }
    for name in sorted(nwbfile.acquisition):
        series = nwbfile.acquisition[name]
        if not isinstance(series, ElectricalSeries):
            continue
        stamps = series.timestamps
        timing = series_timing(
            series.data.shape[0],
            series.rate,
            (stamps[0], stamps[1], stamps[-1]) if stamps is not None and len(stamps) > 1 else None,
        )
        metadata["sampling_rate_hz"], metadata["duration_seconds"] = timing
        break
    return metadata


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
