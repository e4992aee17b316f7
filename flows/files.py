"""Ingest local files (NWB, KiloSort/Phy folders, HDF5, SpikeLab .npz, pickles) into the lake.

Inputs: each path given is a file, a KiloSort folder or a ``.nwb.zarr`` store, or a folder
searched recursively for them (:func:`expand_inputs`: NWB files, ``.nwb.zarr`` stores and
KiloSort folders, or what a glob pattern names).

Lake keys: an input lands under ``dataset=<its parent folder's name>`` (or the dataset
the caller names) as ``<its name>``, the key it has always had, unless that key already
belongs to another input (a manifest there records another path, or another input of the
same run comes first in path order); then its key gets a short hash of its absolute path
(``<name>-<hash>``). So ``a/x/s.nwb`` and ``b/x/s.nwb`` both land, each input keeps its key
from run to run, and a manifest that records another input is never overwritten (that
input fails instead, with :class:`~spikelab.exceptions.LakeKeyConflictError`, if two runs
race for one key).
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from prefect import flow, task, unmapped
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.exceptions import LakeKeyConflictError, UntrustedPickleError
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
from spikelab.io.lake import Lake, distinct_key, safe_key
from spikelab.io.lake_remove import forget_failures
from spikelab.io.manifest import read_manifest
from spikelab.loaders import LOADER_VERSIONS, LOADERS
from spikelab.loaders.formats import (
    FORMATS,
    detect_format,
    input_files,
    is_zarr_nwb,
    npz_holds_objects,
    sniffed_options,
)
from spikelab.tasks._policy import HASH_LIMIT_BYTES, file_identity
from spikelab.tasks.load import Target, load_and_prepare
from spikelab.tasks.outputs import Pending, prepare_publication

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


def printable_path(path: str | os.PathLike[str]) -> str:
    """A path as UTF-8 text, with the bytes of a non-UTF-8 name as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def base_target(location: Path, dataset: str | None = None) -> Target:
    """An input's own lake key: ``dataset`` (default: its parent folder's name) and its name."""
    return {
        "source": "files",
        "dataset_id": safe_key(dataset if dataset is not None else location.parent.name or "root"),
        "asset_id": safe_key(location.name),
    }


def _is_single_input(folder: Path) -> bool:
    """A folder that is one input (a KiloSort folder or a Zarr NWB store), not searched."""
    return (folder / "spike_times.npy").is_file() or is_zarr_nwb(folder)


def _chosen(relative: str, glob: str | None, is_folder: bool) -> bool:
    """Whether a path found in a folder is an input: by ``glob``, else NWB or an input folder.

    A pattern without ``/`` is matched against the name, one with ``/`` against the path
    relative to the folder searched (``*`` also crosses ``/``).
    """
    name = relative.rsplit("/", 1)[-1]
    if glob is not None:
        return fnmatch.fnmatchcase(relative if "/" in glob else name, glob)
    return is_folder or name.lower().endswith(".nwb")


def expand_inputs(paths: Sequence[str], glob: str | None = None) -> list[Path]:
    """The inputs the paths name: files and input folders as they are, folders searched.

    A folder that is not itself an input is searched recursively (top down, by name) for NWB
    files (``*.nwb``), ``.nwb.zarr`` stores and KiloSort folders (holding
    ``spike_times.npy``); with ``glob``, for the files and input folders it matches
    instead (their format is then told as for any input, by suffix). Input folders are
    not searched further, and names starting with ``.`` (partial or hidden files) are
    left out. Paths are absolute, each once, in the order found.

    Raises
    ------
    ValueError
        When a folder holds no input, naming it and what was looked for.
    """
    found: dict[Path, None] = {}
    for text in map(str, paths):
        location = Path(input_path(text)).resolve()
        if not location.is_dir() or _is_single_input(location):
            found.setdefault(location, None)
            continue
        inside = list(_search(location, glob))
        if not inside:
            wanted = (
                f"nothing matching --glob {glob}"
                if glob is not None
                else "no NWB file (*.nwb), .nwb.zarr store or KiloSort folder (spike_times.npy)"
            )
            raise ValueError(
                f"{printable_path(location)} holds {wanted}; give the files themselves, or "
                "choose them with --glob PATTERN (e.g. '*.h5')"
            )
        for path in inside:
            found.setdefault(path, None)
    return list(found)


def _as_parameter(location: Path) -> str:
    """A found input as the task gets it: its path, or a ``file://`` URI if not UTF-8."""
    text = str(location)
    return text if printable_path(text) == text else location.as_uri()


def _search(folder: Path, glob: str | None) -> list[Path]:
    """The inputs under ``folder`` (see :func:`expand_inputs`), folder by folder, by name."""
    inputs = []
    for parent, folders, files in os.walk(folder):
        here = Path(parent)
        singles = {name for name in folders if _is_single_input(here / name)}
        folders[:] = sorted(n for n in folders if n not in singles and not n.startswith("."))
        for name in sorted([*singles, *files]):
            relative = (here / name).relative_to(folder).as_posix()
            if not name.startswith(".") and _chosen(relative, glob, name in singles):
                inputs.append(here / name)
    return inputs


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


def assign_targets(
    lake: Lake, locations: Sequence[Path], dataset: str | None = None
) -> list[Target]:
    """One distinct lake key per input (absolute, distinct ``locations``).

    An input keeps :func:`base_target` when its key is free or already its own; when the
    lake gives it to another input, or another input of this run sorts first by path, it
    gets :func:`~spikelab.io.lake.distinct_key` of its name and path.
    """
    names = [printable_path(location) for location in locations]
    bases = [base_target(location, dataset) for location in locations]
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


def _hashed(files: Sequence[Path]) -> bool:
    """Tell whether an input's identity is its one file's sha256 (what sha256sum prints)."""
    return len(files) == 1 and files[0].stat().st_size <= HASH_LIMIT_BYTES


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
            f"refusing to unpickle {printable_path(location)}: pickles can run code; pass "
            "--trust-pickles / trust_pickles=True if you trust it"
        )


def _chosen_options(kind: str, trust_pickles: bool) -> dict[str, Any]:
    """The loader options this flow sets itself.

    An NWB file without units lands as an empty asset, and an ``.npz``'s object arrays are
    unpickled only when the caller trusts its inputs.
    """
    if kind == "nwb":
        return {"allow_no_units": True}
    if kind == "spikelab_npz":
        return {"allow_pickle": trust_pickles}
    return {}


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
    recorded = printable_path(location)

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
        files = input_files(location, kind)
        identity = file_identity(files)
        content_id = f"{kind}:{identity}:v{LOADER_VERSIONS[kind]}"
        if is_current(known, content_id):
            return skipped(lake, target, started, known)
        options = {**sniffed_options(location, kind), **_chosen_options(kind, trust_pickles)}
        loaded = load_and_prepare(target, partial(LOADERS[kind], str(location), **options))
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
                **({"sha256": identity.removeprefix("sha256:")} if _hashed(files) else {}),
            },
            flow_run_id=current_flow_run_id(),
        )

    result = guarded(lake, target, work, source_reference=recorded, input={"path": recorded})
    if "target" in result:  # a pending publication: the key is this input's
        result["owner"] = recorded
    return result


@flow(name="ingest-files", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def ingest_files(
    paths: list[str],
    format: str = "auto",
    lake: str | None = None,
    refresh: bool = False,
    trust_pickles: bool = False,
    dataset: str | None = None,
    glob: str | None = None,
) -> dict[str, Any]:
    """Ingest local spike files, KiloSort/Phy folders and folders of them into the lake.

    Parameters
    ----------
    paths : list of str
        Files (``.nwb``, ``.h5``/``.hdf5``, ``.npz``, ``.p``/``.pkl``/``.pickle``),
        KiloSort folders, ``.nwb.zarr`` stores, or folders holding them: a folder is
        searched recursively for NWB files, ``.nwb.zarr`` stores and KiloSort folders
        (see :func:`expand_inputs`). A name that is not valid UTF-8 must come as a
        ``file://`` URI (``Path(p).absolute().as_uri()``): Prefect cannot send it as text.
        Such an input then fails alone, named, and the others land. An input given twice
        (or through two links to one file, or found in two folders given) is ingested once.
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
    dataset : str | None, default: None
        The dataset every input lands in; None: each input's parent folder's name.
    glob : str | None, default: None
        In folders, take what this pattern matches instead of NWB files, ``.nwb.zarr``
        stores and KiloSort folders: a pattern without ``/`` is matched against names
        (``*.h5``), one with ``/`` against the path inside the folder (``sub-*/*.nwb``).

    Returns
    -------
    dict
        The run summary. Files land under ``source=files``, ``dataset=<dataset>`` or
        ``dataset=<parent folder>`` (keys: see the module docstring). When any input
        failed, the run ends ``Failed`` and calling the flow raises
        :class:`~spikelab.exceptions.IngestFailedError`; call it with
        ``return_state=True`` and use :func:`spikelab.flows.run_summary` to get the summary
        either way.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dataset is not None and not dataset.strip():
        raise ValueError("dataset must name a dataset (or be None), got an empty name")
    where = Lake(lake)
    given = {Path(input_path(str(text))).resolve(): str(text) for text in paths}
    inputs: dict[Path, str] = {}  # one entry per input, in the order given or found
    for location in expand_inputs(list(map(str, paths)), glob):
        inputs.setdefault(location, given.get(location) or _as_parameter(location))
    targets = assign_targets(where, list(inputs), dataset)
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
        "dataset": dataset,
        "glob": glob,
    }
    outcomes = publish_results(where, list(futures), "files")
    forget_earlier_failures(where, list(inputs), targets, outcomes)
    return finish_run(where, "ingest-files", parameters, outcomes)  # type: ignore[return-value]


def forget_earlier_failures(
    lake: Lake, locations: Sequence[Path], targets: Sequence[Target], outcomes: Sequence[Outcome]
) -> None:
    """Remove failed rows that inputs now in the lake left under other keys (logged).

    A failure here is logged, not raised: this run's assets have landed.
    """
    landed = {
        printable_path(location): key_of(target)
        for location, target, result in zip(locations, targets, outcomes, strict=True)
        if result["status"] in ("ok", "skipped")
    }
    try:
        removed = forget_failures(lake.root, landed)
    except Exception as error:  # noqa: BLE001 - only an earlier run's leftovers stay
        get_run_logger().warning("could not remove earlier failures: %s", error)
        return
    if removed:
        get_run_logger().info(
            "removed %d earlier failed asset(s) of inputs that landed now: %s",
            len(removed),
            ", ".join("/".join(key) for key in removed),
        )
