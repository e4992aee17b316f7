"""Format sniffing: which loader reads a local path, and what the path itself tells it.

Used by the files flow to ingest a folder of mixed inputs; each function looks only at
names, headers and small attribute sets, never at the spike data.
"""

from __future__ import annotations

import ast
import math
import zipfile
from pathlib import Path
from typing import Any, get_args

import h5py
import numpy as np

from spikelab.choices import FileFormat
from spikelab.exceptions import FileFormatError
from spikelab.loaders import SOURCES
from spikelab.loaders._common import open_hdf5

# "auto", then the local formats of the registry (spikelab.loaders.SOURCES), in its order.
FORMATS: tuple[str, ...] = get_args(FileFormat)
_SUFFIXES: dict[str, str] = {
    suffix: source.name for source in SOURCES for suffix in source.suffixes
}


def detect_format(path: Path) -> str:
    """Tell a path's format from what it is: a KiloSort folder, or a file's suffix.

    An ``.h5`` file holding a ``units/spike_times`` dataset is NWB.

    Raises
    ------
    ValueError
        When the path is neither, naming it and the formats known.
    """
    if path.is_dir():
        if (path / "spike_times.npy").is_file():
            return "kilosort"
        if is_zarr_nwb(path):
            return "nwb"
        raise ValueError(
            f"{path} is a folder that is neither a KiloSort folder (no spike_times.npy) nor a "
            "Zarr NWB folder (*.nwb.zarr with .zgroup)"
        )
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        clue = f"its suffix {path.suffix!r}" if path.suffix else "its name (it has no suffix)"
        raise ValueError(
            f"cannot tell the format of {path} from {clue}: known suffixes are "
            f"{', '.join(_SUFFIXES)}; rename the file, or give its format with format= "
            f"(one of {', '.join(FORMATS[1:])})"
        )
    if fmt == "hdf5":
        with open_hdf5(path) as handle:
            if "units" in handle and "spike_times" in handle["units"]:
                return "nwb"
    return fmt


def is_zarr_nwb(folder: Path) -> bool:
    """Tell a Zarr-backed NWB folder (written by hdmf-zarr) by its name and Zarr group file."""
    return folder.name.lower().endswith(".nwb.zarr") and (
        (folder / ".zgroup").is_file() or (folder / "zarr.json").is_file()
    )


def input_files(path: Path, kind: str) -> list[Path]:
    """The files whose bytes make up an input of format ``kind``, sorted.

    A Zarr NWB store counts every chunk file beneath it; any other folder (KiloSort) its
    own files; a file itself.
    """
    if kind == "nwb" and path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path]


def sniffed_options(path: Path, kind: str) -> dict[str, Any]:
    """The loader options the input itself gives: KiloSort's rate, an HDF5 file's layout."""
    if kind == "kilosort":
        return kilosort_options(path)
    if kind == "hdf5":
        return hdf5_options(path)
    return {}


def kilosort_options(folder: Path) -> dict[str, Any]:
    """The sampling rate from the folder's ``params.py`` (``sample_rate = ...``).

    ``params.py`` is read, never run: ``sample_rate`` must be a plain number.

    Raises
    ------
    FileFormatError
        When ``params.py`` is not valid Python text, or its ``sample_rate`` is code (a call,
        a name, arithmetic) or not a positive number; the message names the file and line.
    ValueError
        When ``params.py`` is missing or gives no sample_rate.
    """
    params = folder / "params.py"
    if not params.is_file():
        raise ValueError(
            f"{folder}: no params.py; a KiloSort folder needs one with a line like "
            "sample_rate = 30000.0"
        )
    for statement in _parse_params(params).body:
        if isinstance(statement, ast.Assign) and any(
            getattr(t, "id", None) == "sample_rate" for t in statement.targets
        ):
            return {"fs_Hz": _sample_rate(params, statement)}
    raise ValueError(
        f"{params}: no sample_rate line; add one such as sample_rate = 30000.0 "
        "(the recording's sampling rate in Hz)"
    )


_PARAMS_HINT = "KiloSort writes params.py as plain name = value lines, e.g. sample_rate = 30000.0"


def _parse_params(params: Path) -> ast.Module:
    """Parse ``params.py`` without running it; a file that is not Python text is named."""
    try:
        return ast.parse(params.read_bytes(), filename=str(params))
    except SyntaxError as error:
        where = f", line {error.lineno}" if error.lineno else ""
        raise FileFormatError(
            f"{params}{where}: not valid Python ({error.msg}); {_PARAMS_HINT}: fix the "
            "file or export the folder again"
        ) from None


def _sample_rate(params: Path, statement: ast.Assign) -> float:
    """The number a ``sample_rate = ...`` statement gives, refusing code and non-numbers."""
    where = f"{params}, line {statement.lineno}"
    text = ast.get_source_segment(params.read_text(errors="replace"), statement.value)
    shown = text if text is not None else ast.unparse(statement.value)
    try:
        value = ast.literal_eval(statement.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise FileFormatError(
            f"{where}: sample_rate = {shown} is code, not a number; spikelab reads params.py "
            f"without running it: write the rate in Hz as a number, e.g. sample_rate = 30000.0"
        ) from None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and value > 0 and math.isfinite(value)):
        raise FileFormatError(
            f"{where}: sample_rate = {shown} is not a positive, finite number of Hz; write "
            "the recording's rate, e.g. sample_rate = 30000.0"
        )
    return float(value)


def hdf5_options(path: Path) -> dict[str, Any]:
    """Which HDF5 layout a file uses, from its dataset names and attributes.

    Recognised: ``spike_times`` + ``spike_times_index`` (ragged), ``idces`` + ``times``
    (paired), a ``units`` group of one dataset per unit, and ``raster`` with a
    ``bin_size_ms`` attribute. A ``time_unit`` root attribute gives the unit (default s).

    Raises
    ------
    ValueError
        When none of these layouts is found.
    """
    with open_hdf5(path) as handle:
        unit = str(handle.attrs.get("time_unit", "s"))
        fs = handle.attrs.get("fs_Hz")
        extra: dict[str, Any] = {"fs_Hz": float(fs)} if fs is not None else {}
        if "spike_times" in handle and "spike_times_index" in handle:
            return {
                "spike_times_dataset": "spike_times",
                "spike_times_index_dataset": "spike_times_index",
                "spike_times_unit": unit,
                **extra,
            }
        if "idces" in handle and "times" in handle:
            return {"idces_dataset": "idces", "times_dataset": "times", "times_unit": unit, **extra}
        if isinstance(handle.get("units"), h5py.Group):
            return {"group_per_unit": "units", "group_time_unit": unit, **extra}
        if "raster" in handle and "bin_size_ms" in handle["raster"].attrs:
            return {
                "raster_dataset": "raster",
                "raster_bin_size_ms": float(handle["raster"].attrs["bin_size_ms"]),
            }
    raise ValueError(
        f"{path}: no known HDF5 layout (spike_times + spike_times_index, idces + times, a "
        "units group, or raster with bin_size_ms); load it with load_spikedata_from_hdf5"
    )


def npz_holds_objects(path: Path) -> bool:
    """Tell whether an ``.npz`` holds object arrays, from its array headers (no unpickling).

    Object arrays can only be read by unpickling. A file that is not a zip archive, or an
    unreadable header, gives False: the loader then refuses the file itself.
    """
    from numpy.lib import format as npy

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                with archive.open(name) as member:
                    version = npy.read_magic(member)
                    if version == (1, 0):
                        dtype = npy.read_array_header_1_0(member)[2]
                    elif version == (2, 0):
                        dtype = npy.read_array_header_2_0(member)[2]
                    else:  # a header format numpy reads only privately: assume the worst
                        return True
                    if np.dtype(dtype).hasobject:
                        return True
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return False
    return False
