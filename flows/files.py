"""Ingest local files (NWB, KiloSort/Phy folders, HDF5, SpikeLab .npz, pickles) into the lake."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import h5py
from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.flows._runs import (
    Outcome,
    collect,
    current_flow_run_id,
    finish_run,
    guarded,
    loaded_already,
    staged_or_reload,
)
from spikelab.io.lake import DEFAULT_LAKE, safe_key
from spikelab.loaders import LOADER_VERSIONS
from spikelab.tasks._policy import file_identity
from spikelab.tasks.load import (
    Target,
    load_hdf5,
    load_kilosort,
    load_nwb,
    load_pickle,
    load_spikelab_npz,
)
from spikelab.tasks.outputs import write_manifest, write_units_table

FORMATS = ("auto", "nwb", "kilosort", "hdf5", "spikelab_npz", "pickle")
_SUFFIXES = {
    ".nwb": "nwb",
    ".npz": "spikelab_npz",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}
_LOAD_TASKS = {
    "nwb": load_nwb,
    "kilosort": load_kilosort,
    "hdf5": load_hdf5,
    "spikelab_npz": load_spikelab_npz,
    "pickle": load_pickle,
}


def detect_format(path: Path) -> str:
    """Tell a path's format from what it is: a KiloSort folder, or a file's suffix.

    Raises
    ------
    ValueError
        When the path is neither, naming it and the formats known.
    """
    if path.is_dir():
        if (path / "spike_times.npy").is_file():
            return "kilosort"
        raise ValueError(f"{path} is a folder without spike_times.npy: not a KiloSort folder")
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; pass format= one of "
            f"{', '.join(FORMATS[1:])}"
        )
    if fmt == "hdf5":
        with h5py.File(path, "r") as handle:
            if "units" in handle and "spike_times" in handle["units"]:
                return "nwb"
    return fmt


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
    with h5py.File(path, "r") as handle:
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


@task(name="ingest-file", task_run_name="ingest {path}")
def ingest_file(path: str, fmt: str, lake: str, refresh: bool) -> Outcome:
    """Ingest one local file or folder; any error becomes a ``failed`` manifest."""
    location = Path(path).resolve()
    target: Target = {
        "source": "files",
        "dataset_id": safe_key(location.parent.name or "root"),
        "asset_id": safe_key(location.name),
    }

    def work() -> tuple[str, dict[str, Any]]:
        kind = detect_format(location) if fmt == "auto" else fmt
        files = (
            sorted(p for p in location.iterdir() if p.is_file())
            if location.is_dir()
            else [location]
        )
        content_id = f"{kind}:{file_identity(files)}:v{LOADER_VERSIONS[kind]}"
        existing = None if refresh else loaded_already(lake, target, content_id)
        if existing is not None:
            return "skipped", existing
        parameters: dict[str, Any] = {
            "path": str(location),
            "target": target,
            "content_id": content_id,
        }
        if kind == "kilosort":
            parameters["options"] = kilosort_options(location)
        elif kind == "hdf5":
            parameters["options"] = hdf5_options(location)
        elif kind == "nwb":
            parameters["allow_no_units"] = True
        staged = staged_or_reload(_LOAD_TASKS[kind], refresh, **parameters)
        outputs = write_units_table(staged, lake, target)
        manifest = write_manifest(
            lake,
            target,
            status="ok",
            source_reference=str(location),
            input={
                "path": str(location),
                "format": kind,
                "content_id": content_id,
                "size": sum(f.stat().st_size for f in files),
            },
            outputs=outputs,
            staged=staged,
            flow_run_id=current_flow_run_id(),
        )
        return "ok", manifest

    return guarded(lake, target, work, source_reference=str(location))


@flow(name="ingest-files", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def ingest_files(
    paths: list[str], format: str = "auto", lake: str = DEFAULT_LAKE, refresh: bool = False
) -> dict[str, Any]:
    """Ingest local spike files and KiloSort/Phy folders into the lake.

    Parameters
    ----------
    paths : list of str
        Files (``.nwb``, ``.h5``/``.hdf5``, ``.npz``, ``.pkl``) or KiloSort folders.
    format : str, default: "auto"
        ``auto`` tells each path's format from its suffix (or ``spike_times.npy`` for a
        folder); or one of ``nwb``, ``kilosort``, ``hdf5``, ``spikelab_npz``, ``pickle``.
    lake : str, default: "./spikelab-lake"
        Lake root: a folder or an ``s3://`` URL.
    refresh : bool, default: False
        Load everything again, even unchanged files.

    Returns
    -------
    dict
        The run summary. Files land under ``source=files``, ``dataset=<parent folder>``.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    futures = ingest_file.map(
        [str(p) for p in paths],
        fmt=unmapped(format),
        lake=unmapped(lake),
        refresh=unmapped(refresh),
    )
    parameters = {"paths": [str(p) for p in paths], "format": format, "refresh": refresh}
    return finish_run(lake, "ingest-files", parameters, collect(futures, "files"))  # type: ignore[return-value]
