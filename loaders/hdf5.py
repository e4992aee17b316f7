"""Generic HDF5 spike files in four layouts: raster, ragged, group-per-unit, paired arrays."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab.exceptions import FileFormatError
from spikelab.loaders._common import (
    errors_naming,
    file_attribute,
    first_given,
    merged_metadata,
    open_hdf5,
    read_numbers,
    require_dataset,
)
from spikelab.spikedata import SpikeData, group_by_unit
from spikelab.units import check_time_unit, to_ms

_MAX_PADDING = 1_000_000  # empty units the paired style may add before the file is refused


def load_spikedata_from_hdf5(
    filepath: str | Path,
    *,
    raster_dataset: str | None = None,
    raster_bin_size_ms: float | None = None,
    spike_times_dataset: str | None = None,
    spike_times_index_dataset: str | None = None,
    spike_times_unit: str = "s",
    fs_Hz: float | None = None,
    group_per_unit: str | None = None,
    group_time_unit: str = "s",
    idces_dataset: str | None = None,
    times_dataset: str | None = None,
    times_unit: str = "s",
    raw_dataset: str | None = None,
    raw_time_dataset: str | None = None,
    raw_time_unit: str = "s",
    length_ms: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> SpikeData:
    """Load spike trains from an HDF5 file laid out in one of four styles.

    Name the datasets of exactly one style:

    - raster: ``raster_dataset`` (units x bins of counts) and ``raster_bin_size_ms``;
      fractional counts are truncated toward zero, with a warning naming the dataset;
    - ragged: ``spike_times_dataset`` (all units' times, concatenated) and
      ``spike_times_index_dataset`` (the cumulative END offset of each unit);
    - group-per-unit: ``group_per_unit``, a group holding one dataset of times per unit,
      taken in natural name order (``unit2`` before ``unit10``);
    - paired: ``idces_dataset`` (unit index per spike) and ``times_dataset``.

    Parameters
    ----------
    filepath : str or Path
        The HDF5 file.
    raster_dataset, raster_bin_size_ms : str, float, default: None
        Raster style. The length is always bins x bin size.
    spike_times_dataset, spike_times_index_dataset : str, default: None
        Ragged style.
    spike_times_unit : str, default: "s"
        Unit of the ragged times: ``'s'``, ``'ms'`` or ``'samples'``.
    fs_Hz : float | None, default: None
        Sampling rate, needed whenever a unit is ``'samples'``.
    group_per_unit : str | None, default: None
        Group-per-unit style.
    group_time_unit : str, default: "s"
        Unit of the group-per-unit times.
    idces_dataset, times_dataset : str, default: None
        Paired style. ``N = max(index) + 1``; absent indices become empty units (warned).
    times_unit : str, default: "s"
        Unit of the paired times.
    raw_dataset : str | None, default: None
        Optional raw traces (channels x samples) to attach as ``raw_data``.
    raw_time_dataset : str | None, default: None
        Time of each raw sample; without it the times are built from ``fs_Hz``.
    raw_time_unit : str, default: "s"
        Unit of the raw time vector.
    length_ms : float | None, default: None
        Recording length. Otherwise the file's root attribute ``length_ms``, else the last
        spike minus the start time (root attribute ``start_time``, else 0).
    metadata : mapping | None, default: None
        Merged into the result's metadata, with ``source_file``, ``format`` and ``hdf5_style``.

    Returns
    -------
    SpikeData

    Raises
    ------
    ValueError
        Not exactly one style, a style missing its second dataset, an unknown time unit,
        ``'samples'`` without ``fs_Hz``, a dataset of text where numbers belong, or content
        that breaks the style's rules (the message names the file and the dataset).
    KeyError
        A named dataset is not in the file.
    FileNotFoundError
        The file does not exist.
    """
    styles = {
        "raster": raster_dataset,
        "ragged": spike_times_dataset,
        "group": group_per_unit,
        "paired": idces_dataset,
    }
    chosen = [name for name, value in styles.items() if value is not None]
    if len(chosen) != 1:
        given = ", ".join(chosen) if chosen else "none"
        raise ValueError(
            "name the datasets of exactly one HDF5 style (raster_dataset, spike_times_dataset, "
            f"group_per_unit or idces_dataset); styles given: {given}"
        )
    style = chosen[0]
    _check_style_arguments(style, locals())
    if raw_dataset is not None:
        check_time_unit(raw_time_unit, fs_Hz)

    path = Path(filepath)
    with open_hdf5(path) as handle:
        start_time = first_given(file_attribute(handle, "start_time"), 0.0)
        file_length = file_attribute(handle, "length_ms")
        attributes: list[dict[str, Any]] | None = None
        if style == "raster":
            sd = _raster(path, handle, raster_dataset, raster_bin_size_ms, start_time)
            trains = sd.train
            length = sd.length
        else:
            if style == "ragged":
                trains = _ragged(path, handle, spike_times_dataset, spike_times_index_dataset)
                trains = [to_ms(t, spike_times_unit, fs_Hz) for t in trains]
            elif style == "group":
                names, trains = _group_per_unit(path, handle, group_per_unit)
                trains = [to_ms(t, group_time_unit, fs_Hz) for t in trains]
                attributes = [{"unit_id": name} for name in names]
            else:
                trains = _paired(path, handle, idces_dataset, times_dataset, times_unit, fs_Hz)
            length = first_given(length_ms, file_length)
        raw_data, raw_time = _raw(path, handle, raw_dataset, raw_time_dataset, raw_time_unit, fs_Hz)

    with errors_naming(path):
        return SpikeData(
            trains,
            length=length,
            start_time=start_time,
            neuron_attributes=attributes,
            metadata=merged_metadata(metadata, path, "hdf5", hdf5_style=style),
            raw_data=raw_data,
            raw_time=raw_time,
        )


def _check_style_arguments(style: str, arguments: dict[str, Any]) -> None:
    if style == "raster" and arguments["raster_bin_size_ms"] is None:
        raise ValueError("raster style needs raster_bin_size_ms (the bin width in ms)")
    if style == "ragged":
        if arguments["spike_times_index_dataset"] is None:
            raise ValueError(
                "ragged style needs spike_times_index_dataset (cumulative end index per unit)"
            )
        check_time_unit(arguments["spike_times_unit"], arguments["fs_Hz"])
    if style == "group":
        check_time_unit(arguments["group_time_unit"], arguments["fs_Hz"])
    if style == "paired":
        if arguments["times_dataset"] is None:
            raise ValueError("paired style needs times_dataset next to idces_dataset")
        check_time_unit(arguments["times_unit"], arguments["fs_Hz"])


def _raster(
    path: Path, handle: h5py.File, name: Any, bin_size_ms: Any, start_time: float
) -> SpikeData:
    counts = read_numbers(path, require_dataset(handle, name), "spike counts")
    if counts.dtype.kind == "f":
        counts = _truncated_counts(path, name, counts)
    try:
        return SpikeData.from_raster(counts, bin_size_ms, start_time=start_time)
    except ValueError as error:
        raise FileFormatError(f"{path}: dataset {name!r}: {error}") from error


def _truncated_counts(path: Path, name: str, counts: np.ndarray) -> np.ndarray:
    """Float counts as whole counts, truncated toward zero as upstream does (warned)."""
    if not np.all(np.isfinite(counts)):
        raise FileFormatError(f"{path}: dataset {name!r} holds NaN or infinite spike counts")
    if counts.size and counts.min() < 0:
        raise FileFormatError(
            f"{path}: dataset {name!r}: a raster holds spike counts: negative values found"
        )
    whole = np.trunc(counts)
    fractional = int(np.count_nonzero(whole != counts))
    if fractional:
        warnings.warn(
            f"{path}: raster dataset {name!r} holds {fractional} non-integer counts; "
            "truncated them toward zero (0.7 -> 0, 2.5 -> 2)",
            UserWarning,
            stacklevel=4,
        )
    return whole.astype(np.int64)


def _ragged(path: Path, handle: h5py.File, times_name: Any, index_name: Any) -> list[np.ndarray]:
    times = read_numbers(path, require_dataset(handle, times_name), "spike times").ravel()
    ends = _whole_numbers(
        path, index_name, read_numbers(path, require_dataset(handle, index_name)).ravel()
    )
    if ends.size == 0:
        return []
    if ends.min() < 0 or np.any(np.diff(ends) < 0):
        raise FileFormatError(
            f"{path}: index {index_name!r} must hold non-decreasing cumulative end offsets"
        )
    if ends[-1] > times.size:
        raise FileFormatError(
            f"{path}: index {index_name!r} ends at {ends[-1]} but {times_name!r} holds "
            f"only {times.size} spike times"
        )
    if ends[-1] < times.size:
        warnings.warn(
            f"{path}: index {index_name!r} covers {ends[-1]} of {times.size} spike times; "
            "the remaining times belong to no unit and were ignored",
            UserWarning,
            stacklevel=3,
        )
    return np.split(times[: ends[-1]], ends[:-1])


def _whole_numbers(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    """Offsets or indices as int64; fractions, or integers too large for int64, are refused."""
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(np.mod(values, 1) != 0):
            raise FileFormatError(
                f"{path}: dataset {name!r} must hold whole numbers (offsets or indices), but "
                "holds fractions or NaN; it cannot be truncated safely"
            )
    elif values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
        raise FileFormatError(
            f"{path}: dataset {name!r} holds {int(values.max())}, too large for an offset or index"
        )
    return values.astype(np.int64)


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _group_per_unit(path: Path, handle: h5py.File, name: Any) -> tuple[list[str], list[np.ndarray]]:
    group = handle.get(name)
    if not isinstance(group, h5py.Group):
        raise KeyError(f"group {name!r} is not in {handle.filename}")
    names = sorted(
        (key for key, item in group.items() if isinstance(item, h5py.Dataset)), key=_natural_key
    )
    return names, [read_numbers(path, group[key], "spike times").ravel() for key in names]


def _paired(
    path: Path,
    handle: h5py.File,
    idces_name: Any,
    times_name: Any,
    unit: str,
    fs_Hz: float | None,
) -> list[np.ndarray]:
    idces = read_numbers(path, require_dataset(handle, idces_name), "unit indices").ravel()
    times = read_numbers(path, require_dataset(handle, times_name), "spike times").ravel()
    if idces.size != times.size:
        raise FileFormatError(
            f"{path}: {idces_name!r} has {idces.size} entries but {times_name!r} has {times.size}"
        )
    if idces.size and idces.min() < 0:
        raise FileFormatError(f"{path}: {idces_name!r} holds a negative unit index")
    if not np.issubdtype(idces.dtype, np.integer):
        if np.any(np.mod(idces, 1) != 0):
            raise FileFormatError(f"{path}: {idces_name!r} must hold whole unit indices")
        idces = idces.astype(np.int64)
    n_units = int(idces.max()) + 1 if idces.size else 0
    n_missing = n_units - np.unique(idces).size
    if n_missing > max(_MAX_PADDING, 10 * (n_units - n_missing)):
        raise FileFormatError(
            f"{path}: {idces_name!r} reaches unit index {n_units - 1} with only "
            f"{n_units - n_missing} indices in use, which would pad {n_missing} empty units; "
            "is a -1 (no unit) stored as an unsigned integer? Remove those spikes first"
        )
    if n_missing:
        warnings.warn(
            f"{path}: {n_missing} unit indices below {n_units} have no spikes; "
            f"padded them as empty units",
            UserWarning,
            stacklevel=3,
        )
    grouped, ends = group_by_unit(idces, to_ms(times, unit, fs_Hz), n_units)
    return np.split(grouped, ends[:-1]) if n_units else []


def _raw(
    path: Path,
    handle: h5py.File,
    raw_name: str | None,
    time_name: str | None,
    unit: str,
    fs_Hz: float | None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if raw_name is None:
        return None, None
    raw = read_numbers(path, require_dataset(handle, raw_name), "raw samples")
    if raw.ndim == 1:
        raw = raw[np.newaxis, :]
    if time_name is not None:
        times = read_numbers(path, require_dataset(handle, time_name), "sample times")
        return raw, to_ms(times.ravel(), unit, fs_Hz)
    if fs_Hz is None:
        raise ValueError(
            f"raw_dataset {raw_name!r} needs raw_time_dataset or fs_Hz to time its samples"
        )
    return raw, to_ms(np.arange(raw.shape[-1]), "samples", fs_Hz)
