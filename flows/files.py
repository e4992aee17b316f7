"""Ingest local files (NWB, KiloSort/Phy folders, HDF5, SpikeLab .npz, pickles) into the lake.

Lake keys: an input lands under ``dataset=<its parent folder's name>`` as
``<its name>``, the key it has always had, unless that key already belongs to another input
(a manifest there records another path, or another input of the same run comes first in
path order); then its key gets a short hash of its absolute path (``<name>-<hash>``). So
``a/x/s.nwb`` and ``b/x/s.nwb`` both land, each input keeps its key from run to run, and a
manifest that records another input is never overwritten (that input fails instead, with
:class:`~spikelab.exceptions.LakeKeyConflictError`, if two runs race for one key).
"""

from __future__ import annotations

import ast
import os
import time
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import h5py
import numpy as np
from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.exceptions import FileFormatError, LakeKeyConflictError, UntrustedPickleError
from spikelab.flows._publish import publish_results
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    finish_run,
    guarded,
    is_current,
    key_of,
    known_assets,
    manifest_path,
    skipped,
)
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake, distinct_key, resolve_lake, safe_key
from spikelab.io.manifest import read_manifest
from spikelab.loaders import (
    LOADER_VERSIONS,
    load_spikedata_from_hdf5,
    load_spikedata_from_kilosort,
    load_spikedata_from_nwb,
    load_spikedata_from_pickle,
    load_spikedata_from_spikelab_sorted_npz,
)
from spikelab.spikedata import SpikeData
from spikelab.tasks._policy import file_identity
from spikelab.tasks.load import Target, load_and_prepare
from spikelab.tasks.outputs import Pending, prepare_publication

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
_LOADERS: dict[str, Callable[..., SpikeData]] = {
    "nwb": load_spikedata_from_nwb,
    "kilosort": load_spikedata_from_kilosort,
    "hdf5": load_spikedata_from_hdf5,
    "spikelab_npz": load_spikedata_from_spikelab_sorted_npz,
    "pickle": load_spikedata_from_pickle,
}
MAX_MANIFEST_READS = 16


def input_path(text: str) -> str:
    """The local path an input names: a plain path, or a ``file://`` URI.

    A ``file://`` URI (``Path(p).absolute().as_uri()``) is how a caller passes a name that
    is not valid UTF-8: Prefect sends parameters as UTF-8 text and cannot carry such a name
    as a plain string. Its percent-escapes are decoded to the exact bytes of the name.
    """
    if not text.startswith("file://"):
        return text
    return os.fsdecode(unquote_to_bytes(urlsplit(text).path))


def shown(path: str | os.PathLike[str]) -> str:
    """A path as UTF-8 text, with the bytes of a non-UTF-8 name as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def base_target(location: Path) -> Target:
    """An input's own lake key: its parent folder's name and its name."""
    return {
        "source": "files",
        "dataset_id": safe_key(location.parent.name or "root"),
        "asset_id": safe_key(location.name),
    }


def recorded_input(manifest: dict[str, Any]) -> str | None:
    """The input path a files manifest records (older failed manifests: its reference)."""
    path = (manifest.get("input") or {}).get("path") or manifest.get("source_reference")
    return str(path) if path is not None else None


def key_owner(lake: Lake, target: Target) -> str | None:
    """The input whose manifest holds ``target`` in the lake, or None when it is free.

    A manifest that is not valid JSON names no input: its key counts as free.
    """
    path = manifest_path(lake, target)
    try:
        return recorded_input(read_manifest(path))
    except (FileNotFoundError, ValueError):
        return None


def assign_targets(lake: Lake, locations: Sequence[Path]) -> list[Target]:
    """One distinct lake key per input (absolute, distinct ``locations``).

    An input keeps :func:`base_target` when its key is free or already its own; when the
    lake gives it to another input, or another input of this run sorts first by path, it
    gets :func:`~spikelab.io.lake.distinct_key` of its name and path.
    """
    names = [shown(location) for location in locations]
    bases = [base_target(location) for location in locations]
    claims: dict[tuple[str, str], list[int]] = {}
    for index, base in enumerate(bases):
        claims.setdefault((base["dataset_id"], base["asset_id"]), []).append(index)
    with ThreadPoolExecutor(max_workers=MAX_MANIFEST_READS) as pool:
        owners = pool.map(lambda indices: key_owner(lake, bases[indices[0]]), claims.values())
        holders = {
            key: owner or min(names[i] for i in indices)
            for (key, indices), owner in zip(claims.items(), owners, strict=True)
        }
    return [
        base
        if holders[(base["dataset_id"], base["asset_id"])] == name
        else {**base, "asset_id": distinct_key(location.name, name)}
        for location, name, base in zip(locations, names, bases, strict=True)
    ]


def check_key_is_mine(lake: Lake, target: Target, recorded: str) -> None:
    """Refuse to write over a manifest that records another input.

    Raises
    ------
    LakeKeyConflictError
        When the manifest at ``target`` records another input path.
    """
    owner = key_owner(lake, target)
    if owner is not None and owner != recorded:
        raise LakeKeyConflictError(
            f"lake key {target['dataset_id']}/{target['asset_id']} already holds {owner}; "
            f"{recorded} is not written over it: run the flow again (inputs get a distinct "
            "key when it starts) or remove that manifest"
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


def refuse_untrusted(location: Path, kind: str, trust_pickles: bool) -> None:
    """Refuse inputs that need unpickling unless the caller trusts them.

    Raises
    ------
    UntrustedPickleError
        For a pickle, or an ``.npz`` holding object arrays, when ``trust_pickles`` is False.
    """
    if trust_pickles:
        return
    if kind == "pickle" or (kind == "spikelab_npz" and npz_holds_objects(location)):
        raise UntrustedPickleError(
            f"refusing to unpickle {shown(location)}: pickles can run code; pass "
            "--trust-pickles / trust_pickles=True if you trust it"
        )


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


def open_hdf5(path: Path) -> h5py.File:
    """Open an HDF5 file for reading.

    Raises
    ------
    FileFormatError
        When the file is not readable HDF5, naming it (h5py's own error does not).
    """
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise FileFormatError(
            f"{shown(path)} is not a readable HDF5 file ({error}): check that it is "
            "whole and really HDF5"
        ) from error


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


@task(name="ingest-file", task_run_name="ingest {path}")
def ingest_file(
    path: str,
    target: Target,
    fmt: str,
    lake: Lake,
    known: AssetState | None,
    trust_pickles: bool = False,
) -> Outcome | Pending:
    """Ingest one local file or folder into ``target``; any error becomes a failed result.

    ``path`` is as the flow received it (a path or a ``file://`` URI, see :func:`input_path`);
    ``known`` is what the lake holds for ``target`` (None: nothing, or a refresh). The
    input is loaded in memory in this task itself (no cached task run of its own: a local
    file is cheap to load again, and nothing is staged on disk) and comes back as a
    pending publication for the flow's publisher.
    """
    location = Path(input_path(path)).resolve()
    recorded = shown(location)

    def work(started: float) -> Outcome | Pending:
        if recorded != str(location):
            raise ValueError(
                f"{recorded}: the file name is not valid UTF-8 ({os.fsencode(location)!r}); "
                "spikelab records names as UTF-8 text: rename it (e.g. with convmv) and "
                "ingest it again"
            )
        if not location.exists():
            raise FileNotFoundError(f"{recorded}: no such file or folder")
        check_key_is_mine(lake, target, recorded)
        kind = detect_format(location) if fmt == "auto" else fmt
        refuse_untrusted(location, kind, trust_pickles)
        files = (
            sorted(p for p in location.rglob("*") if p.is_file())
            if kind == "nwb"  # a Zarr store: every chunk file is content
            else sorted(p for p in location.iterdir() if p.is_file())
            if location.is_dir()
            else [location]
        )
        content_id = f"{kind}:{file_identity(files)}:v{LOADER_VERSIONS[kind]}"
        if is_current(known, content_id):
            return skipped(lake, target, started, known)
        options: dict[str, Any] = {}
        if kind == "kilosort":
            options = kilosort_options(location)
        elif kind == "hdf5":
            options = hdf5_options(location)
        elif kind == "nwb":
            options = {"allow_no_units": True}
        elif kind == "spikelab_npz":
            options = {"allow_pickle": trust_pickles}
        loaded = load_and_prepare(target, partial(_LOADERS[kind], str(location), **options))
        return prepare_publication(
            target,
            loaded,
            seconds=time.monotonic() - started,
            source_reference=recorded,
            input={
                "path": recorded,
                "format": kind,
                "content_id": content_id,
                "size": sum(f.stat().st_size for f in files),
            },
            flow_run_id=current_flow_run_id(),
        )

    return guarded(lake, target, work, source_reference=recorded, input={"path": recorded})


@flow(name="ingest-files", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def ingest_files(
    paths: list[str],
    format: str = "auto",
    lake: str | None = None,
    refresh: bool = False,
    trust_pickles: bool = False,
) -> dict[str, Any]:
    """Ingest local spike files and KiloSort/Phy folders into the lake.

    Parameters
    ----------
    paths : list of str
        Files (``.nwb``, ``.h5``/``.hdf5``, ``.npz``, ``.p``/``.pkl``/``.pickle``) or
        KiloSort folders. A name that is not valid UTF-8 must come as a ``file://`` URI
        (``Path(p).absolute().as_uri()``): Prefect cannot send it as text. Such an input
        then fails alone, named, and the others land. An input given twice (or through
        two links to one file) is ingested once.
    format : str, default: "auto"
        ``auto`` tells each path's format from its suffix (or ``spike_times.npy`` for a
        folder); or one of ``nwb``, ``kilosort``, ``hdf5``, ``spikelab_npz``, ``pickle``.
    lake : str | None, default: None
        Lake root: a folder (made absolute before anything is recorded) or an ``s3://``
        URL. None: ``$SPIKELAB_LAKE``, else ``./spikelab-lake``.
    refresh : bool, default: False
        Load everything again, even unchanged files.
    trust_pickles : bool, default: False
        Load pickles and ``.npz`` files with object arrays. Unpickling runs whatever code
        the file holds, so these inputs fail unless the caller trusts them.

    Returns
    -------
    dict
        The run summary. Files land under ``source=files``, ``dataset=<parent folder>``
        (keys: see the module docstring). When any input failed, the run ends ``Failed``
        and calling the flow raises :class:`~spikelab.exceptions.IngestFailedError`; call
        it with ``return_state=True`` and use :func:`spikelab.flows.run_summary` to get the
        summary either way.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    where = Lake(resolve_lake(lake))
    inputs: dict[Path, str] = {}  # one entry per file, in the order given
    for text in map(str, paths):
        inputs.setdefault(Path(input_path(text)).resolve(), text)
    targets = assign_targets(where, list(inputs))
    index = known_assets(where, refresh)
    futures = ingest_file.map(
        list(inputs.values()),
        targets,
        fmt=unmapped(format),
        lake=unmapped(where),
        known=[index.get(key_of(target)) for target in targets],
        trust_pickles=unmapped(trust_pickles),
    )
    parameters = {
        "paths": [str(p) for p in paths],
        "format": format,
        "lake": where.root,
        "refresh": refresh,
        "trust_pickles": trust_pickles,
    }
    outcomes = publish_results(where, list(futures), "files")
    return finish_run(where, "ingest-files", parameters, outcomes)  # type: ignore[return-value]
