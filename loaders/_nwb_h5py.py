"""Read an NWB file's Units, electrodes and file-level metadata with h5py alone.

Works on any h5py file object, local or remote: every column is one bulk read, and no
ElectricalSeries data is ever read (only its shape and rate).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError
from spikelab.loaders._hdf5_direct import read_float64
from spikelab.loaders._nwb_table import ElectrodesColumns, UnitsColumns, first_rows

ELECTRODES_PATH = "general/extracellular_ephys/electrodes"
_SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "date_of_birth")
_SESSION_DATASETS = ("identifier", "session_description", "session_start_time")
_UNITS_DATASETS = {"id", "electrodes", "electrodes_index", "obs_intervals", "obs_intervals_index"}
_ELECTRODES_DATASETS = ("id", "location", "group_name", "group", "x", "y", "z")


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return value


def _read_text_column(dataset: h5py.Dataset) -> list[str]:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return list(dataset.asstr()[()])
    return [str(_text(value)) for value in dataset[()]]


def _scalar_dataset(handle: h5py.Group, name: str) -> Any:
    item = handle.get(name)
    if not isinstance(item, h5py.Dataset):
        return None
    value = item.asstr()[()] if h5py.check_string_dtype(item.dtype) else item[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else None
    return value.item() if isinstance(value, np.generic) else value


def _is_plain_column(dataset: h5py.Dataset, n_units: int) -> bool:
    kind = dataset.dtype.kind
    return dataset.shape == (n_units,) and (
        kind in "biuf" or h5py.check_string_dtype(dataset.dtype) is not None
    )


def datasets_read(handle: h5py.File) -> list[h5py.Dataset]:
    """The datasets this module's readers read whole (known from the file's metadata alone).

    The Units columns :func:`read_units` reads, the electrodes table's columns, the session
    and subject fields: what is worth fetching in one go before reading a remote file.
    """
    wanted: list[tuple[str, Iterable[str]]] = [
        (ELECTRODES_PATH, _ELECTRODES_DATASETS),
        ("/", _SESSION_DATASETS),
        ("general/subject", _SUBJECT_FIELDS),
    ]
    units = handle.get("units")
    if isinstance(units, h5py.Group):
        wanted.append(("units", _units_columns_read(units)))
    found: list[h5py.Dataset] = []
    for group_path, names in wanted:
        group = handle.get(group_path)
        if isinstance(group, h5py.Group):
            items = (group.get(name) for name in names)
            found.extend(item for item in items if isinstance(item, h5py.Dataset))
    return found


def _units_columns_read(group: h5py.Group) -> list[str]:
    """The names of the Units columns :func:`read_units` reads ([] if it cannot read any)."""
    try:
        times_name, index_name = _spike_time_columns(group, "")  # read_units says what is wrong
    except FileFormatError:
        return []
    ids = group.get("id")
    n_units = (ids if isinstance(ids, h5py.Dataset) else group[index_name]).shape[0]
    scalars = _scalar_column_names(group, times_name, index_name, n_units)
    return [times_name, index_name, *_UNITS_DATASETS, *scalars]


def _spike_time_columns(group: h5py.Group, source: str) -> tuple[str, str]:
    """The names of the Units' spike-times column and its index (any ``*spike_times``)."""
    names = set(group.keys())
    times_name = next((n for n in sorted(names) if n.endswith("spike_times")), None)
    if times_name is None or f"{times_name}_index" not in names:
        raise FileFormatError(
            f"{source}: the Units table has no spike_times column with its spike_times_index "
            f"(columns: {sorted(names)})"
        )
    return times_name, f"{times_name}_index"


def _scalar_column_names(
    group: h5py.Group, times_name: str, index_name: str, n_units: int
) -> list[str]:
    """The Units columns with one plain value per unit (quality metrics, names ...)."""
    names = set(group.keys())
    ragged = {name[: -len("_index")] for name in names if name.endswith("_index")}
    skip = {"id", times_name, index_name, "electrodes", "electrodes_index", *ragged}
    skip |= {f"{name}_index" for name in ragged}
    return [
        name
        for name in sorted(names - skip)
        if isinstance(dataset := group[name], h5py.Dataset) and _is_plain_column(dataset, n_units)
    ]


def read_units(handle: h5py.File, source: str) -> UnitsColumns | None:
    """Read the Units table as whole arrays, or return None when the file has none."""
    group = handle.get("units")
    if not isinstance(group, h5py.Group):
        return None
    names = set(group.keys())
    times_name, index_name = _spike_time_columns(group, source)
    ids_dataset = group.get("id")
    n_units = group[index_name].shape[0]
    if isinstance(ids_dataset, h5py.Dataset):
        if h5py.check_string_dtype(ids_dataset.dtype) is not None:
            ids: NDArray[Any] = np.array(ids_dataset.asstr()[()], dtype=object)
            warnings.warn(
                f"{source}: the Units ids are strings, not integers; kept as unit_id as they are",
                UserWarning,
                stacklevel=3,
            )
        else:
            ids = ids_dataset[()]
    else:
        ids = np.arange(n_units)

    scalars = {}
    for name in _scalar_column_names(group, times_name, index_name, ids.size):
        dataset = group[name]
        scalars[name] = (
            np.array(_read_text_column(dataset), dtype=object)
            if h5py.check_string_dtype(dataset.dtype) is not None
            else dataset[()]
        )

    units = UnitsColumns(
        ids=ids,
        spike_times_s=read_float64(group[times_name]),
        spike_ends=np.asarray(group[index_name][()], dtype=np.int64).reshape(-1),
        scalars=scalars,
    )
    if "electrodes" in names:
        electrodes_table = handle.get(ELECTRODES_PATH)
        n_electrodes = electrodes_table["id"].shape[0] if electrodes_table is not None else 0
        ends = group["electrodes_index"][()] if "electrodes_index" in names else None
        units.electrode_rows = first_rows(
            source, group["electrodes"][()], ends, ids.size, n_electrodes
        )
    if "obs_intervals" in names and "obs_intervals_index" in names:
        intervals = np.asarray(group["obs_intervals"][()], dtype=np.float64).reshape(-1, 2)
        ends = np.asarray(group["obs_intervals_index"][()], dtype=np.int64)
        units.obs_intervals_s = np.split(intervals, ends[:-1]) if ends.size else []
    return units


def read_electrodes(handle: h5py.File) -> ElectrodesColumns | None:
    """Read the electrodes table's ids, locations, group names and x/y/z."""
    table = handle.get(ELECTRODES_PATH)
    if not isinstance(table, h5py.Group) or "id" not in table:
        return None
    ids = np.asarray(table["id"][()], dtype=np.int64)

    def texts(name: str) -> list[str | None]:
        if name in table:
            return list(_read_text_column(table[name]))
        return [None] * ids.size

    group_names = texts("group_name")
    if "group_name" not in table and "group" in table:
        group_names = [handle[reference].name.rsplit("/", 1)[-1] for reference in table["group"]]
    xyz = None
    if all(axis in table for axis in "xyz"):
        xyz = np.column_stack([np.asarray(table[a][()], dtype=np.float64) for a in "xyz"])
    return ElectrodesColumns(ids, texts("location"), group_names, xyz)


def read_metadata(handle: h5py.File) -> dict[str, Any]:
    """File-level metadata: identifiers, subject, devices, first ElectricalSeries' rate."""
    metadata: dict[str, Any] = {
        "identifier": _scalar_dataset(handle, "identifier"),
        "session_description": _scalar_dataset(handle, "session_description"),
        "session_start_time": _scalar_dataset(handle, "session_start_time"),
    }
    subject = handle.get("general/subject")
    for name in _SUBJECT_FIELDS:
        metadata[name] = _scalar_dataset(subject, name) if subject is not None else None
    devices = handle.get("general/devices")
    metadata["device_names"] = sorted(devices.keys()) if devices is not None else []
    metadata["sampling_rate_hz"], metadata["duration_seconds"] = _first_series_timing(handle)
    return metadata


def _first_series_timing(handle: h5py.File) -> tuple[float | None, float | None]:
    acquisition = handle.get("acquisition")
    if not isinstance(acquisition, h5py.Group):
        return None, None
    for name in sorted(acquisition.keys()):
        series = acquisition[name]
        if _text(series.attrs.get("neurodata_type")) != "ElectricalSeries":
            continue
        start = series.get("starting_time")
        if start is not None and "rate" in start.attrs:
            rate = float(start.attrs["rate"])
            return rate, series["data"].shape[0] / rate
        timestamps = series.get("timestamps")
        if timestamps is not None and timestamps.shape[0] > 1:
            edges = timestamps[[0, 1]]
            rate = 1.0 / float(edges[1] - edges[0])
            return rate, float(timestamps[-1] - timestamps[0]) + 1.0 / rate
        break
    return None, None
