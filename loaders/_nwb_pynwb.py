"""Read an NWB file's Units, electrodes and file-level metadata through pynwb's objects."""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError
from spikelab.loaders._hdf5_direct import read_float64
from spikelab.loaders._nwb_table import ElectrodesColumns, UnitsColumns, first_rows


def _array(data: Any) -> NDArray[Any]:
    """Read a whole column at once (h5py dataset, list or array)."""
    return np.asarray(data[()] if hasattr(data, "shape") and hasattr(data, "dtype") else data)


def _float64_column(data: Any) -> NDArray[np.float64]:
    """A whole column as a new flat float64 array (straight from the file's bytes if it can)."""
    if isinstance(data, h5py.Dataset):
        return read_float64(data)
    return np.array(_array(data), dtype=np.float64).reshape(-1)  # a copy: it gets scaled


def read_units(nwbfile: Any, source: str) -> UnitsColumns | None:
    """Read ``nwbfile.units`` as whole arrays, or return None when there is no Units table."""
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    table = nwbfile.units
    if table is None:
        return None
    by_name = {column.name: column for column in table.columns}
    index = by_name.get("spike_times_index")
    if not isinstance(index, VectorIndex):
        raise FileFormatError(
            f"{source}: the Units table has no spike_times column with its spike_times_index "
            f"(columns: {sorted(by_name)})"
        )
    ids = _array(table.id.data)
    indexed = {c.target.name for c in by_name.values() if isinstance(c, VectorIndex)}
    scalars = {}
    for name, column in by_name.items():
        if isinstance(column, VectorIndex | DynamicTableRegion) or name in indexed:
            continue
        values = _array(column.data)
        if values.shape != (ids.size,) or values.dtype.kind not in "biufOSU":
            continue
        if values.dtype.kind in "OSU":
            values = np.array(
                [v.decode() if isinstance(v, bytes) else v for v in values], dtype=object
            )
            if not all(isinstance(v, str) for v in values):
                continue
        scalars[name] = values

    units = UnitsColumns(
        ids=ids,
        spike_times_s=_float64_column(index.target.data),
        spike_ends=np.asarray(_array(index.data), dtype=np.int64).reshape(-1),
        scalars=scalars,
    )
    region = by_name.get("electrodes")
    if region is not None:
        region_index = by_name.get("electrodes_index")
        n_electrodes = len(nwbfile.electrodes) if nwbfile.electrodes is not None else 0
        units.electrode_rows = first_rows(
            source,
            _array(region.data),
            None if region_index is None else _array(region_index.data),
            ids.size,
            n_electrodes,
        )
    intervals_index = by_name.get("obs_intervals_index")
    if isinstance(intervals_index, VectorIndex):
        intervals = np.asarray(_array(intervals_index.target.data), dtype=np.float64)
        ends = np.asarray(_array(intervals_index.data), dtype=np.int64)
        units.obs_intervals_s = np.split(intervals.reshape(-1, 2), ends[:-1]) if ends.size else []
    return units


def read_electrodes(nwbfile: Any) -> ElectrodesColumns | None:
    """Read the electrodes table's ids, locations, group names and x/y/z."""
    table = nwbfile.electrodes
    if table is None:
        return None
    ids = np.asarray(_array(table.id.data), dtype=np.int64)
    names = set(table.colnames)

    def texts(name: str) -> list[str | None]:
        if name not in names:
            return [None] * ids.size
        return [v.decode() if isinstance(v, bytes) else str(v) for v in _array(table[name].data)]

    group_names = texts("group_name")
    if "group_name" not in names and "group" in names:
        group_names = [group.name for group in table["group"].data]
    xyz = None
    if {"x", "y", "z"} <= names:
        xyz = np.column_stack(
            [np.asarray(_array(table[axis].data), dtype=np.float64) for axis in "xyz"]
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
        n_samples = series.data.shape[0]
        if series.rate is not None:
            metadata["sampling_rate_hz"] = float(series.rate)
            metadata["duration_seconds"] = n_samples / float(series.rate)
        elif series.timestamps is not None and len(series.timestamps) > 1:
            first, second = series.timestamps[0], series.timestamps[1]
            rate = 1.0 / float(second - first)
            metadata["sampling_rate_hz"] = rate
            metadata["duration_seconds"] = float(series.timestamps[-1] - first) + 1.0 / rate
        break
    return metadata


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
