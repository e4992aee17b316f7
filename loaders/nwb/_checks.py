"""Checks an NWB Units column passes before spikelab reads it, whichever library opened it.

A column is looked at through what its file declares (shape, type, stored size) before a
single value is read, so a corrupt or hostile file fails with one clear error that names
the file and the rule instead of an allocation of hundreds of gigabytes or a bare numpy
error.
"""

from __future__ import annotations

import math
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError
from spikelab.loaders.nwb._hdf5_direct import read_float64, stored_size

# Columns smaller than this are read whatever the file says about their storage.
SMALL_COLUMN_BYTES = 64 * 2**20
# How many declared bytes a compressed column may unpack per stored byte (gzip's limit is
# about 1032; spike times and offsets compress far less).
MAX_COMPRESSION = 1000
_NUMBER_KINDS = "iuf"


def _stored(data: Any) -> Any:
    """The array object behind a column: hdmf wraps some in a dataset-like ``dataset``."""
    return getattr(data, "dataset", data) if not isinstance(data, h5py.Dataset) else data


def declared_length(data: Any) -> int:
    """Number of rows a column declares, without reading it."""
    shape = getattr(_stored(data), "shape", None)
    if shape is None:
        return len(data)
    return int(shape[0]) if shape else 1  # a scalar dataset reads as one value


def _stored_bytes(data: Any) -> tuple[int, bool] | None:
    stored = _stored(data)
    if isinstance(stored, h5py.Dataset):
        return stored_size(stored)
    if hasattr(stored, "nbytes_stored"):  # a zarr array: chunks are compressed as a rule
        return int(stored.nbytes_stored), True
    return None  # already in memory


def refuse_oversized(source: str, name: str, data: Any) -> None:
    """Raise FileFormatError when a column declares more values than its file holds.

    An unwritten or truncated dataset may declare any shape (10**11 spike times in a
    file of a few kilobytes); reading it would allocate that much memory first.
    """
    stored_array = _stored(data)
    shape, dtype = getattr(stored_array, "shape", None), getattr(stored_array, "dtype", None)
    if shape is None or dtype is None or dtype.kind not in "biufc":
        return
    declared = math.prod(shape) * dtype.itemsize
    stored = _stored_bytes(data) if declared > SMALL_COLUMN_BYTES else None
    if stored is None:
        return
    stored_bytes, packed = stored
    if declared > stored_bytes * (MAX_COMPRESSION if packed else 1):
        raise FileFormatError(
            f"{source}: {name} declares {math.prod(shape)} values ({declared / 1e9:.1f} GB) but "
            f"the file stores {stored_bytes} bytes of them; a column cannot hold more than its "
            "file does, so spikelab refuses to read it. The file is corrupt or was not "
            "written completely: re-export it from its source"
        )


def _check_numeric(source: str, name: str, data: Any, what: str) -> None:
    """Refuse a column whose declared type (or, in memory, its values' type) is not numeric."""
    dtype = getattr(_stored(data), "dtype", None)
    if dtype is None:
        dtype = np.asarray(data).dtype
    if dtype.kind not in _NUMBER_KINDS:
        kind = "text" if dtype.kind in "OSU" else f"values of type {dtype}"
        raise FileFormatError(
            f"{source}: {name} holds {kind} where numbers belong ({what}); rewrite the column "
            "with numeric values"
        )


def decode_text(value: bytes) -> str:
    """Text bytes as str: UTF-8 (NWB's encoding), else Latin-1, which older files hold."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def text_value(value: Any) -> Any:
    """Bytes (also inside a 0-d array) as decoded text; any other value unchanged."""
    if isinstance(value, bytes):
        return decode_text(value)
    if isinstance(value, np.ndarray) and value.shape == ():
        return text_value(value[()])
    return value


def read_strings(dataset: h5py.Dataset) -> NDArray[Any]:
    """A text dataset's values, as stored (bytes), in its shape.

    Read with h5py's low-level call: for a few values it takes a fraction of the time of
    ``dataset[()]``, whose selection machinery dominates small text reads.
    """
    if dataset.shape is None:  # a null dataspace: no value at all
        return np.asarray(dataset[()])
    values = np.empty(dataset.shape, dtype=dataset.dtype)
    if values.size:
        dataset.id.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
    return values


def read_whole(data: Any) -> NDArray[Any]:
    """A whole column as an array (h5py or zarr dataset, hdmf wrapper, list or array).

    HDF5 text is read as bytes and decoded by :func:`decode_text`, so a file that is not
    UTF-8 throughout still loads.
    """
    stored = _stored(data)
    if isinstance(stored, h5py.Dataset) and h5py.check_string_dtype(stored.dtype) is not None:
        raw = read_strings(stored).reshape(-1)
        return np.array([decode_text(v) if isinstance(v, bytes) else v for v in raw], dtype=object)
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        return np.asarray(data[()])
    return np.asarray(data)


def _check_flat(source: str, name: str, data: Any) -> None:
    shape = getattr(_stored(data), "shape", None)
    if shape is not None and len(shape) > 1:
        raise FileFormatError(
            f"{source}: {name} has shape {tuple(shape)}; it must be one-dimensional (one value "
            "per spike or per unit)"
        )


def floats(
    source: str, name: str, data: Any, what: str = "times in seconds", flat: bool = True
) -> NDArray[np.float64]:
    """Read a numeric column as a new flat float64 array, after its checks.

    ``what`` says what the numbers are, for the error a column of text gets; ``flat``
    refuses a column of more than one dimension.
    """
    refuse_oversized(source, name, data)
    _check_numeric(source, name, data, what)
    if flat:
        _check_flat(source, name, data)
    if isinstance(data, h5py.Dataset):
        return read_float64(data)
    values = read_whole(data)
    return np.array(values, dtype=np.float64).reshape(-1)  # a copy: it gets scaled


def _non_whole(values: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (values != np.floor(values))


def end_offsets(source: str, name: str, data: Any) -> NDArray[np.int64]:
    """Read a ragged column's index: whole, non-negative, non-decreasing end offsets.

    Float offsets are accepted when every one is a whole number (MATLAB writers store
    doubles); a fractional one is refused, never truncated.
    """
    refuse_oversized(source, name, data)
    _check_numeric(source, name, data, "end offsets")
    _check_flat(source, name, data)
    values = read_whole(data).reshape(-1)
    rule = "it must hold whole, non-negative, non-decreasing end offsets, one per unit"
    if values.dtype.kind == "f":
        bad = _non_whole(values)
        if np.any(bad):
            raise FileFormatError(
                f"{source}: {name} holds the non-whole offset {float(values[bad][0])}; {rule} "
                "(spikelab refuses to truncate it)"
            )
    ends = values.astype(np.int64)
    if ends.size and ends.min() < 0:
        raise FileFormatError(f"{source}: {name} holds the negative offset {ends.min()}; {rule}")
    if np.any(np.diff(ends) < 0):
        at = int(np.argmax(np.diff(ends) < 0))
        raise FileFormatError(
            f"{source}: {name} decreases at entry {at + 1} ({ends[at]} then {ends[at + 1]}); {rule}"
        )
    return ends


def whole_rows(source: str, name: str, data: Any, what: str = "row numbers") -> NDArray[np.int64]:
    """Read a column of whole numbers (table rows, ids) as int64, refusing anything else."""
    refuse_oversized(source, name, data)
    _check_numeric(source, name, data, what)
    values = read_whole(data).reshape(-1)
    if values.dtype.kind == "f" and np.any(_non_whole(values)):
        raise FileFormatError(
            f"{source}: {name} holds non-whole values where whole {what} belong; rewrite it "
            "with integers"
        )
    return values.astype(np.int64)


def check_unit_count(
    source: str, ids_name: str, n_ids: int, index_name: str, n_ends: int, table: str = "Units"
) -> None:
    """Every row has one entry in each column: refuse tables whose columns disagree."""
    if n_ids != n_ends:
        raise FileFormatError(
            f"{source}: the {table} table has {n_ids} entries in {ids_name} but {n_ends} in "
            f"{index_name}; each row needs one of each, so the file is inconsistent"
        )


def check_end_fits(
    source: str, index_name: str, ends: NDArray[np.int64], column_name: str, n_values: int
) -> None:
    """Refuse a ragged index whose last offset points past the end of the column it splits."""
    if ends.size and ends[-1] > n_values:
        raise FileFormatError(
            f"{source}: {index_name} points past the end of {column_name} "
            f"({int(ends[-1])} > {n_values} values); the index and the column it splits do not "
            "belong together"
        )


def obs_intervals(
    source: str, data: Any, ends: NDArray[np.int64] | None
) -> list[NDArray[np.float64]] | None:
    """Each unit's observation intervals in seconds (rows of start, stop), after the checks."""
    if ends is None:
        return None
    values = floats(source, "obs_intervals", data, "interval bounds in seconds", flat=False)
    if values.size % 2:
        raise FileFormatError(
            f"{source}: obs_intervals holds {values.size} numbers; it must hold start, stop pairs"
        )
    intervals = values.reshape(-1, 2)
    check_end_fits(source, "obs_intervals_index", ends, "obs_intervals", intervals.shape[0])
    return np.split(intervals, ends[:-1]) if ends.size else []
