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

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from prefect import flow, task, unmapped
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
from spikelab.io.lake import Lake, distinct_key, resolve_lake, safe_key
from spikelab.io.manifest import read_manifest
from spikelab.loaders import LOADER_VERSIONS, LOADERS
from spikelab.loaders.formats import (
    FORMATS,
    detect_format,
    input_files,
    npz_holds_objects,
    sniffed_options,
)
from spikelab.tasks._policy import file_identity
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
    names = [printable_path(location) for location in locations]
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
        content_id = f"{kind}:{file_identity(files)}:v{LOADER_VERSIONS[kind]}"
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
