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

from spikelab.loaders._common import python_value
from spikelab.loaders.nwb._checks import (
    check_end_fits,
    check_unit_count,
    declared_length,
    end_offsets,
    floats,
    obs_intervals,
    read_strings,
    read_whole,
    refuse_oversized,
    text_value,
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

ELECTRODES_PATH = "general/extracellular_ephys/electrodes"
_SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "date_of_birth")
_SESSION_DATASETS = ("identifier", "session_description", "session_start_time")
_UNITS_DATASETS = {"id", "electrodes", "electrodes_index", "obs_intervals", "obs_intervals_index"}
_ELECTRODES_DATASETS = ("id", "location", "group_name", "group", "x", "y", "z")


def _read_text_column(dataset: h5py.Dataset) -> list[str]:
    return [str(text_value(value)) for value in read_whole(dataset).tolist()]


def _scalar_dataset(handle: h5py.Group, name: str) -> Any:
    item = _member(handle, name)
    if not isinstance(item, h5py.Dataset):
        return None
    value = read_strings(item) if h5py.check_string_dtype(item.dtype) else item[()]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else None
    return python_value(text_value(value))


def _is_plain_column(dataset: h5py.Dataset, n_units: int) -> bool:
    """One number, text or object reference per unit (references resolve to names).

    Rows of another table (a DynamicTableRegion) are left out, as pynwb's reader does.
    """
    dtype = dataset.dtype
    return (
        dataset.shape == (n_units,)
        and (
            dtype.kind in "biuf"
            or h5py.check_string_dtype(dtype) is not None
            or h5py.check_ref_dtype(dtype) is h5py.Reference
        )
        and text_value(dataset.attrs.get("neurodata_type")) != "DynamicTableRegion"
    )


def _names_of(handle: h5py.File, references: NDArray[Any]) -> NDArray[Any]:
    """The name (last path part) of each referenced object; None for a null reference."""
    return np.array(
        [handle[ref].name.rsplit("/", 1)[-1] if ref else None for ref in references], dtype=object
    )


def _read_scalar_column(handle: h5py.File, dataset: h5py.Dataset) -> NDArray[Any]:
    if h5py.check_string_dtype(dataset.dtype) is not None:
        return np.array(_read_text_column(dataset), dtype=object)
    if h5py.check_ref_dtype(dataset.dtype) is h5py.Reference:
        return _names_of(handle, dataset[()])
    return dataset[()]


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
    units = _member(handle, "units")
    if isinstance(units, h5py.Group):
        wanted.append(("units", _units_columns_read(units)))
    found: list[h5py.Dataset] = []
    for group_path, names in wanted:
        group = _member(handle, group_path)
        if isinstance(group, h5py.Group):
            items = (_member(group, name) for name in names)
            found.extend(item for item in items if isinstance(item, h5py.Dataset))
    return found


def _units_columns_read(group: h5py.Group) -> list[str]:
    """The names of the Units columns :func:`read_units` reads ([] if it cannot read any)."""
    columns = _datasets(group)
    times_name = _spike_times_name(columns)
    if times_name is None:
        return []
    index_name = f"{times_name}_index"
    n_units = declared_length(columns[index_name])
    scalars = _scalar_column_names(columns, times_name, index_name, n_units)
    return [times_name, index_name, *_UNITS_DATASETS, *scalars]


def _member(group: h5py.Group, path: str) -> h5py.Dataset | h5py.Group | None:
    """The dataset or group at ``path`` under ``group``; None if there is none.

    Like ``group.get(path)``, without the work h5py's high-level lookup adds per call.
    """
    try:
        item = h5py.h5o.open(group.id, path.encode())
    except KeyError:
        return None
    if isinstance(item, h5py.h5d.DatasetID):
        return h5py.Dataset(item, readonly=True)
    if isinstance(item, h5py.h5g.GroupID):
        return h5py.Group(item)
    return None


def _dataset(group: h5py.Group, path: str) -> h5py.Dataset | None:
    """The dataset at ``path`` under ``group``; None if there is none (or a group)."""
    item = _member(group, path)
    return item if isinstance(item, h5py.Dataset) else None


def _datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    """Every dataset of a group, by name, each opened once."""
    members = ((name, _member(group, name)) for name in group.keys())
    return {name: item for name, item in members if isinstance(item, h5py.Dataset)}


def _spike_times_name(columns: dict[str, h5py.Dataset]) -> str | None:
    """The Units dataset that holds the spike times (see :func:`spike_times_column`)."""
    ragged = [
        name for name in columns if name.endswith("spike_times") and f"{name}_index" in columns
    ]
    return spike_times_column(ragged)


def _scalar_column_names(
    columns: dict[str, h5py.Dataset], times_name: str, index_name: str, n_units: int
) -> list[str]:
    """The Units columns with one plain value per unit (quality metrics, names ...)."""
    names = set(columns)
    ragged = {name[: -len("_index")] for name in names if name.endswith("_index")}
    skip = {"id", times_name, index_name, "electrodes", "electrodes_index", *ragged}
    skip |= {f"{name}_index" for name in ragged}
    return [name for name in sorted(names - skip) if _is_plain_column(columns[name], n_units)]


def _read_ids(source: str, ids_dataset: h5py.Dataset) -> NDArray[Any]:
    refuse_oversized(source, "id", ids_dataset)
    if h5py.check_string_dtype(ids_dataset.dtype) is not None:
        warnings.warn(
            f"{source}: the Units ids are strings, not integers; kept as unit_id as they are",
            UserWarning,
            stacklevel=4,
        )
        return read_whole(ids_dataset)
    if ids_dataset.dtype.kind not in "iu":
        return whole_rows(source, "id", ids_dataset, "unit ids")  # whole floats pass
    return ids_dataset[()].reshape(-1)


def read_units(handle: h5py.File, source: str) -> UnitsColumns | NoSpikeTimes | None:
    """Read the Units table as whole arrays; None when the file has none.

    Every column is checked against what the file declares before it is read (see
    :mod:`spikelab.loaders.nwb._checks`).
    """
    group = _member(handle, "units")
    if not isinstance(group, h5py.Group):
        return None
    names = set(group.keys())
    columns = _datasets(group)
    times_name = _spike_times_name(columns)
    if times_name is None:
        return NoSpikeTimes(sorted(names))
    index_name = f"{times_name}_index"
    index_dataset = columns[index_name]
    ids_dataset = columns.get("id")
    n_units = declared_length(index_dataset)
    if ids_dataset is not None:
        check_unit_count(source, "id", declared_length(ids_dataset), index_name, n_units)
        ids = _read_ids(source, ids_dataset)
    else:
        ids = np.arange(n_units)
    ends = end_offsets(source, index_name, index_dataset)
    times = columns[times_name]
    check_end_fits(source, index_name, ends, times_name, declared_length(times))
    units = UnitsColumns(
        ids=ids,
        spike_times_s=floats(source, times_name, times),
        spike_ends=ends,
        scalars={
            name: _read_scalar_column(handle, columns[name])
            for name in _scalar_column_names(columns, times_name, index_name, n_units)
        },
    )
    if "electrodes" in columns:
        table_ids = _member(handle, f"{ELECTRODES_PATH}/id")
        n_electrodes = declared_length(table_ids) if isinstance(table_ids, h5py.Dataset) else 0
        units.electrode_rows = first_rows(
            source,
            whole_rows(source, "electrodes", columns["electrodes"]),
            _ragged_index(source, columns, "electrodes_index", index_name, n_units),
            n_units,
            n_electrodes,
        )
    if "obs_intervals" in columns and "obs_intervals_index" in columns:
        units.obs_intervals_s = obs_intervals(
            source,
            columns["obs_intervals"],
            _ragged_index(source, columns, "obs_intervals_index", index_name, n_units),
        )
    return units


def _ragged_index(
    source: str, columns: dict[str, h5py.Dataset], name: str, index_name: str, n_units: int
) -> NDArray[np.int64] | None:
    """A Units ragged column's index (one end offset per unit); None when there is none."""
    dataset = columns.get(name)
    if dataset is None:
        return None
    check_unit_count(source, index_name, n_units, name, declared_length(dataset))
    return end_offsets(source, name, dataset)


def read_electrodes(handle: h5py.File, source: str) -> ElectrodesColumns | None:
    """Read the electrodes table's ids, locations, group names and x/y/z."""
    table = _member(handle, ELECTRODES_PATH)
    if not isinstance(table, h5py.Group):
        return None
    opened = {name: _dataset(table, name) for name in _ELECTRODES_DATASETS}
    columns = {name: item for name, item in opened.items() if item is not None}
    if "id" not in columns:
        return None
    ids = whole_rows(source, "electrodes id", columns["id"])
    present = list(columns)
    for name, column in columns.items():
        check_unit_count(source, "id", ids.size, name, declared_length(column), table="electrodes")

    def texts(name: str) -> list[str | None]:
        if name in present:
            return list(_read_text_column(columns[name]))
        return [None] * ids.size

    group_names = texts("group_name")
    if "group_name" not in present and "group" in present:
        group_names = list(_names_of(handle, columns["group"][()]))
    xyz = None
    if all(axis in present for axis in "xyz"):
        xyz = np.column_stack(
            [floats(source, f"electrodes {a}", columns[a], "coordinates") for a in "xyz"]
        )
    return ElectrodesColumns(ids, texts("location"), group_names, xyz)


def read_metadata(handle: h5py.File) -> dict[str, Any]:
    """File-level metadata: identifiers, subject, devices, first ElectricalSeries' rate."""
    metadata: dict[str, Any] = {
        "identifier": _scalar_dataset(handle, "identifier"),
        "session_description": _scalar_dataset(handle, "session_description"),
        "session_start_time": _scalar_dataset(handle, "session_start_time"),
    }
    subject = _member(handle, "general/subject")
    for name in _SUBJECT_FIELDS:
        metadata[name] = _scalar_dataset(subject, name) if subject is not None else None
    devices = _member(handle, "general/devices")
    metadata["device_names"] = sorted(devices.keys()) if devices is not None else []
    metadata["sampling_rate_hz"], metadata["duration_seconds"] = _first_series_timing(handle)
    return metadata


def _first_series_timing(handle: h5py.File) -> tuple[float | None, float | None]:
    acquisition = _member(handle, "acquisition")
    if not isinstance(acquisition, h5py.Group):
        return None, None
    for name in sorted(acquisition.keys()):
        series = _member(acquisition, name)
        if not isinstance(series, h5py.Group):
            continue
        if text_value(series.attrs.get("neurodata_type")) != "ElectricalSeries":
            continue
        data = _dataset(series, "data")
        if data is None:
            raise KeyError(f"{series.name} is an ElectricalSeries without data")
        n_samples = data.shape[0]
        start = _dataset(series, "starting_time")
        if start is not None and "rate" in start.attrs:
            return series_timing(n_samples, start.attrs["rate"], None)
        timestamps = _dataset(series, "timestamps")
        if timestamps is not None and timestamps.shape[0] > 1:
            first, second = timestamps[[0, 1]]
            return series_timing(n_samples, None, (first, second, timestamps[-1]))
        break
    return None, None
