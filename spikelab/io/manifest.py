"""Per-asset JSON manifests: what was read, what was written, and how it went."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from typing import Any, Literal

from spikelab.io import storage
from spikelab.io.json_codec import to_plain
from spikelab.spikedata import SpikeData

MANIFEST_SCHEMA_VERSION = "1"
Status = Literal["ok", "failed", "skipped"]
_SOFTWARE = (
    "spikelab",
    "numpy",
    "h5py",
    "pyarrow",
    "pynwb",
    "spikeinterface",
    "ONE-api",
    "prefect",
)


@functools.cache
def _installed_versions() -> tuple[tuple[str, str], ...]:
    """Read once per process: a lookup costs about 0.5 ms a package."""
    found = []
    for name in _SOFTWARE:
        try:
            found.append((name, package_metadata.version(name)))
        except package_metadata.PackageNotFoundError:
            continue
    return tuple(found)


def software_versions() -> dict[str, str]:
    """Installed versions of spikelab and the libraries that shape its output."""
    return dict(_installed_versions())


def spikedata_summary(sd: SpikeData) -> dict[str, Any]:
    """Summarise a SpikeData: units, spikes, length and start."""
    return {
        "N": sd.N,
        "total_spikes": int(sum(train.size for train in sd.train)),
        "length_ms": sd.length,
        "start_time_ms": sd.start_time,
    }


def write_manifest(dest: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """Write one asset's manifest as JSON (atomically) and return it.

    ``fields`` are those of :func:`build_manifest`; ``dest`` is the local path or URL of
    the ``.json`` file.
    """
    manifest = build_manifest(**fields)
    put_manifest(dest, manifest)
    return manifest


def build_manifest(
    *,
    source: str,
    dataset_id: str,
    asset_id: str,
    status: Status,
    version: str | None = None,
    source_reference: str | None = None,
    input: Mapping[str, Any] | None = None,
    outputs: Sequence[Mapping[str, Any]] = (),
    spikedata: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    error: str | None = None,
    flow_run_id: str | None = None,
    warnings: Mapping[str, int] | None = None,
    skipped_columns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One asset's manifest, as :func:`write_manifest` writes it.

    Parameters
    ----------
    source, dataset_id, asset_id : str
        Where the asset sits in the lake.
    status : {"ok", "failed", "skipped"}
        The outcome.
    version, source_reference : str | None, default: None
        Dataset version and a URL (or path) naming the input.
    input : mapping | None, default: None
        What was read: path or URL, size, sha256 and/or DANDI etag.
    outputs : sequence of mapping, default: ()
        What was written: a file with ``path``, ``sha256`` and ``rows``; the asset's rows
        in a lake table with ``table``, ``version`` and ``rows``.
    spikedata : mapping | None, default: None
        :func:`spikedata_summary` of the loaded data.
    metadata : mapping | None, default: None
        The loaded data's metadata (made JSON-safe here).
    error : str | None, default: None
        The error message of a failed asset.
    flow_run_id : str | None, default: None
        The Prefect flow run that wrote it.
    warnings : mapping | None, default: None
        Warnings raised while loading the input: ``{message: count}``.
    skipped_columns : mapping | None, default: None
        Attributes the units table left out: ``{attribute name: reason}``.
    """
    manifest: dict[str, Any] = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "source": source,
        "dataset_id": dataset_id,
        "asset_id": asset_id,
        "version": version,
        "source_reference": source_reference,
        "input": to_plain(dict(input or {})),
        "outputs": to_plain([dict(output) for output in outputs]),
        "spikedata": to_plain(dict(spikedata)) if spikedata is not None else None,
        "metadata": to_plain(dict(metadata or {})),
        "software": software_versions(),
        "flow_run_id": flow_run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "status": status,
        "error": error,
        "warnings": to_plain(dict(warnings or {})),
        "skipped_columns": to_plain(dict(skipped_columns or {})),
    }
    return manifest


def record_failure(
    dest: str | os.PathLike[str],
    *,
    source: str,
    dataset_id: str,
    asset_id: str,
    error: str,
    version: str | None = None,
    source_reference: str | None = None,
    input: Mapping[str, Any] | None = None,
    flow_run_id: str | None = None,
    warnings: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Record that an asset failed, without ever undoing its last good publication.

    When ``dest`` holds an ``ok`` manifest whose outputs are still the files it lists
    (:func:`outputs_intact`), that manifest stays, and the failure goes into its
    ``last_failure`` field (``error``, ``flow_run_id``, ``failed_at``, ``input``,
    ``warnings``); the next good load writes a fresh manifest without it. Otherwise (no
    manifest, an earlier failure, an unreadable file, outputs replaced by the failed
    attempt) a ``failed`` manifest is written: the caller then removes the asset's outputs,
    so the lake never serves a table whose manifest says ``failed``. Parameters are those
    of :func:`write_manifest`.

    Returns
    -------
    dict
        The manifest now at ``dest``.
    """
    previous = _readable_manifest(dest)
    if previous is not None and previous.get("status") == "ok" and outputs_intact(previous):
        previous["last_failure"] = to_plain(
            {
                "error": error,
                "flow_run_id": flow_run_id,
                "failed_at": datetime.now(UTC).isoformat(),
                "input": dict(input or {}),
                "warnings": dict(warnings or {}),
            }
        )
        put_manifest(dest, previous)
        return previous
    return write_manifest(
        dest,
        source=source,
        dataset_id=dataset_id,
        asset_id=asset_id,
        status="failed",
        version=version,
        source_reference=source_reference,
        input=input,
        error=error,
        flow_run_id=flow_run_id,
        warnings=warnings,
    )


def outputs_intact(manifest: Mapping[str, Any]) -> bool:
    """Tell whether every output a manifest lists with a sha256 is there, with that sha256.

    Outputs recorded without one (a raw Zarr folder, rows in a lake table, whose commit
    no later failure can undo) are not checked.
    """
    for output in manifest.get("outputs") or []:
        if not output.get("sha256"):
            continue
        try:
            data = storage.get_bytes(output["path"])
        except FileNotFoundError:
            return False
        if hashlib.sha256(data).hexdigest() != output["sha256"]:
            return False
    return True


def with_table_version(manifest: Mapping[str, Any], version: int | None) -> dict[str, Any]:
    """A copy of an ok asset's manifest recording the units table version its rows landed in."""
    stamped = {**manifest, "table_version": version}
    stamped["outputs"] = [
        {**output, "version": version} if output.get("table") == "units" else output
        for output in manifest.get("outputs") or []
    ]
    return stamped


def put_manifest(dest: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
    """Write a manifest as indented JSON at ``dest`` (atomically)."""
    storage.put_bytes(dest, json.dumps(manifest, indent=2, allow_nan=False).encode())


def _readable_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when there is none or it is not valid JSON."""
    try:
        return read_manifest(path)
    except (FileNotFoundError, ValueError):
        return None


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`."""
    manifest: dict[str, Any] = json.loads(storage.get_bytes(path))
    return manifest
