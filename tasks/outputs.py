"""Prefect tasks that write into the lake: units tables, manifests, raw Zarr recordings."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import task

from spikelab.io import manifest as manifests
from spikelab.io import storage
from spikelab.io.lake import Lake
from spikelab.loaders.nwb_recording import save_nwb_recording_as_zarr
from spikelab.tasks.load import StagedUnits, Target


@task(name="write-units-table")
def write_units_table(staged: StagedUnits, lake: str, target: Target) -> list[dict[str, Any]]:
    """Publish a staged units table and its raster plot into the lake (atomically).

    The staged files are removed once both are in the lake (a later cache hit on them
    loads the asset again: see :func:`spikelab.flows._runs.staged_or_reload`).

    Returns
    -------
    list of dict
        The written outputs, each with ``path``, ``sha256`` and ``rows``.
    """
    where = Lake(lake)
    key = (target["source"], target["dataset_id"], target["asset_id"])
    units = Path(staged["units_path"]).read_bytes()
    units_path = where.units_path(*key)
    storage.put_bytes(units_path, units)
    raster = Path(staged["raster_path"]).read_bytes()
    raster_path = where.raster_path(*key)
    storage.put_bytes(raster_path, raster)
    for staged_file in (staged["units_path"], staged["raster_path"]):
        Path(staged_file).unlink(missing_ok=True)
    return [
        {
            "path": units_path,
            "sha256": hashlib.sha256(units).hexdigest(),
            "rows": staged["spikedata"]["N"],
        },
        {"path": raster_path, "sha256": hashlib.sha256(raster).hexdigest(), "rows": None},
    ]


@task(name="write-manifest")
def write_manifest(
    lake: str,
    target: Target,
    *,
    status: manifests.Status,
    version: str | None = None,
    source_reference: str | None = None,
    input: Mapping[str, Any] | None = None,
    outputs: Sequence[Mapping[str, Any]] = (),
    staged: StagedUnits | None = None,
    error: str | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Write the asset's manifest into the lake and return it.

    The staged result's load warnings and skipped columns are recorded with it (results
    staged by older versions have neither).
    """
    return manifests.write_manifest(
        Lake(lake).manifest_path(target["source"], target["dataset_id"], target["asset_id"]),
        **target,
        status=status,
        version=version,
        source_reference=source_reference,
        input=input,
        outputs=outputs,
        spikedata=staged["spikedata"] if staged else None,
        metadata=staged["metadata"] if staged else None,
        error=error,
        flow_run_id=flow_run_id,
        warnings=staged.get("warnings") if staged else None,
        skipped_columns=staged.get("skipped_columns") if staged else None,
    )


@task(name="convert-raw-to-zarr")
def convert_raw_to_zarr(path: str, lake: str, target: Target) -> dict[str, Any]:
    """Save a local NWB file's raw ElectricalSeries as Zarr under ``<lake>/raw/``."""
    return save_nwb_recording_as_zarr(
        path, Lake(lake).raw_path(target["asset_id"]), overwrite=True, provenance=dict(target)
    )
