"""Format sniffing: which loader reads a local path, and what the path itself tells it.

Used by the files flow to ingest a folder of mixed inputs; each function looks only at
names, headers and small attribute sets, never at the spike data.
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab.loaders._common import open_hdf5

FORMATS = ("auto", "nwb", "kilosort", "hdf5", "spikelab_npz", "pickle")
_SUFFIXES = {
    ".nwb": "nwb",
    ".npz": "spikelab_npz",
    ".p": "pickle",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
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
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; pass --format (format=) one "
            f"of {', '.join(FORMATS[1:])}"
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

    Raises
    ------
    ValueError
        When ``params.py`` is missing or gives no sample_rate.
    """
    params = folder / "params.py"
    if params.is_file():
        for statement in ast.parse(params.read_text()).body:
            if isinstance(statement, ast.Assign) and any(
                getattr(t, "id", None) == "sample_rate" for t in statement.targets
            ):
                return {"fs_Hz": float(ast.literal_eval(statement.value))}
    raise ValueError(f"{folder}: no sample_rate in params.py; the KiloSort folder needs one")


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
