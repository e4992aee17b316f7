"""Helpers shared by the loaders: input checks, HDF5 access, length/start ladders."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab.exceptions import DatasetNotFoundError, FileFormatError, InvalidSpikeDataError

_DECLARED_BYTES_WITHOUT_CHECK = 1 << 28  # 256 MiB: read whatever the file says
_MAX_FILL_RATIO = 1000  # declared bytes per stored byte beyond which a dataset is refused


def python_value(value: Any, *, arrays_as_lists: bool = False) -> Any:
    """A numpy scalar as the Python scalar it holds; arrays as lists when asked, else kept."""
    if arrays_as_lists and isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def existing_file(filepath: str | os.PathLike[str], what: str = "input file") -> Path:
    """Return ``filepath`` as a Path, or raise FileNotFoundError naming it."""
    path = Path(filepath)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


@contextmanager
def open_hdf5(path: Path, what: str = "HDF5 file") -> Iterator[h5py.File]:
    """Open an HDF5 file read-only; a file h5py cannot open raises FileFormatError naming it.

    ``what`` names the kind of file in the errors (e.g. "NWB/HDF5 file").
    """
    existing_file(path, what)
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(
            f"{path} is not a readable {what} (truncated or corrupt?): {error}"
        ) from error
    with handle:
        yield handle


def require_dataset(handle: h5py.File | h5py.Group, name: str) -> h5py.Dataset:
    """Return the dataset ``name``, or raise a KeyError naming it and the file."""
    item = handle.get(name)
    if item is None:
        raise DatasetNotFoundError(f"dataset {name!r} is not in {handle.file.filename}")
    if not isinstance(item, h5py.Dataset):
        raise DatasetNotFoundError(f"{name!r} in {handle.file.filename} is a group, not a dataset")
    return item


def read_numbers(path: Path, dataset: h5py.Dataset, what: str = "numbers") -> np.ndarray:
    """Read a whole dataset that must hold numbers (or booleans).

    Raises
    ------
    FileFormatError
        Text where numbers belong (see :func:`check_numeric`), or a dataset that declares
        far more values than the file stores (see :func:`check_declared_size`).
    """
    check_numeric(path, dataset, what)
    check_declared_size(path, dataset)
    return np.asarray(dataset[()])


def read_slab(path: Path, dataset: h5py.Dataset, selection: Any) -> np.ndarray:
    """Read ``dataset[selection]``; a value HDF5 cannot decode names the file and its filters.

    Raises
    ------
    FileFormatError
        HDF5 failed to read the stored bytes, typically because the dataset was compressed
        with a filter plugin (e.g. a vendor's) that this machine does not have.
    """
    try:
        return np.asarray(dataset[selection])
    except OSError as error:
        raise FileFormatError(
            f"{path}: cannot read dataset {dataset.name!r} ({error}); it is stored with "
            f"filters {_filter_names(dataset)}: install the HDF5 plugin for any that is not "
            "built in (e.g. the vendor's) and point HDF5_PLUGIN_PATH at it"
        ) from error


def _filter_names(dataset: h5py.Dataset) -> str:
    plist = dataset.id.get_create_plist()
    names = []
    for index in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(index)
        label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        names.append(f"{code} ({label})" if label else str(code))
    return ", ".join(names) or "none"


def check_declared_size(path: Path, dataset: h5py.Dataset) -> None:
    """Refuse, before allocating, a large dataset that stores almost none of what it declares.

    A chunked dataset can declare 10**11 values while the file holds a few bytes (the rest
    is fill value); reading it would try to allocate hundreds of GiB. Real data compresses
    far less than the ratio allowed here.
    """
    declared = dataset.size * dataset.dtype.itemsize
    if declared <= _DECLARED_BYTES_WITHOUT_CHECK or dataset.is_virtual or dataset.external:
        return  # virtual and external datasets keep their values in other files
    stored = dataset.id.get_storage_size()
    if declared > _MAX_FILL_RATIO * max(stored, 1):
        raise FileFormatError(
            f"{path}: dataset {dataset.name!r} declares {dataset.size} values "
            f"({declared / 2**30:.1f} GiB) but the file stores only {stored} bytes of them; "
            "refusing to allocate it. The file is damaged or was not written completely"
        )


def check_numeric(path: Path, dataset: h5py.Dataset, what: str = "numbers") -> None:
    """Refuse a dataset of text, objects or compound records where numbers belong.

    Raises
    ------
    FileFormatError
        The message names the file, the dataset, its type and what it should hold.
    """
    if dataset.dtype.kind not in "biuf":
        raise FileFormatError(
            f"{path}: dataset {dataset.name!r} holds {_kind_name(dataset.dtype)} "
            f"(dtype {dataset.dtype}) but must hold {what}; point the loader at the dataset "
            "of numbers or rewrite it as a numeric array"
        )


def _kind_name(dtype: np.dtype[Any]) -> str:
    if dtype.kind in "SUO" or h5py.check_string_dtype(dtype) is not None:
        return "text"
    return {"V": "compound records", "c": "complex numbers"}.get(dtype.kind, "non-numeric data")


def file_attribute(handle: h5py.File, name: str) -> float | None:
    """Return a numeric root attribute (``length_ms``, ``start_time``) or None if absent.

    Raises
    ------
    FileFormatError
        The attribute is not one number (text, several values); the message names the file.
    """
    if name not in handle.attrs:
        return None
    value = np.asarray(handle.attrs[name]).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "iuf":
        raise FileFormatError(
            f"{getattr(handle, 'filename', handle)}: root attribute {name!r} must be one "
            f"number, got {handle.attrs[name]!r}; fix the attribute or delete it"
        )
    return float(value[0])


def first_given(*values: float | None) -> float | None:
    """Return the first value that is not None (the explicit > file > inferred ladder)."""
    return next((value for value in values if value is not None), None)


@contextmanager
def errors_naming(source: Path | str) -> Iterator[None]:
    """Prefix SpikeData validation errors raised in the block with ``source``."""
    try:
        yield
    except InvalidSpikeDataError as error:
        raise InvalidSpikeDataError(f"{source}: {error}") from error


def merged_metadata(
    metadata: Mapping[str, Any] | None, source: Path | str, fmt: str, **extra: Any
) -> dict[str, Any]:
    """Caller's metadata, then the loader's own fields (``source_file``, ``format`` ...)."""
    merged = dict(metadata or {})
    merged.update(source_file=str(source), format=fmt, **extra)
    return merged
