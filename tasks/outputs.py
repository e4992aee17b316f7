"""The one publishing step every ingest flow uses, and the raw Zarr conversion.

An asset's task ends with :func:`prepare_publication`: it turns the loaded asset into a
:class:`Pending` publication (the units as an Arrow table, the raster PNG and the manifest
still to be written). The flow hands it to a :class:`spikelab.flows._publish.Publisher`,
which commits it to the lake's Delta table together with other finished assets, then
writes the raster and the manifest (recording the table version).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import pyarrow as pa
from prefect import task

from spikelab.io import manifest as manifests
from spikelab.io.lake import Lake
from spikelab.loaders.nwb.recording import save_nwb_recording_as_zarr
from spikelab.tasks.load import Loaded, Target


class Pending(TypedDict):
    """An asset ready to publish (``status`` ok), or whose rows must go (``failed``).

    ``units`` holds the asset's rows (none for a failed asset: its rows are deleted);
    ``manifest`` is complete but for the outputs the publisher adds (the table rows and
    the raster); ``outputs`` lists other outputs already written (a raw Zarr store);
    ``raster`` is the PNG to put beside the manifest; ``seconds`` is the time the asset's
    task took; ``note`` goes into the outcome's ``error`` column of an ok asset;
    ``owner``, when set, is the input the key belongs to: the commit refuses the asset if
    the lake gives the key to another (see :class:`spikelab.io.delta_lake.Publication`).
    """

    target: Target
    status: str
    units: pa.Table | None
    manifest: dict[str, Any]
    outputs: list[dict[str, Any]]
    raster: bytes | None
    seconds: float
    note: str | None
    owner: NotRequired[str]


def prepare_publication(
    target: Target,
    loaded: Loaded,
    *,
    seconds: float,
    version: str | None = None,
    source_reference: str | None = None,
    input: Mapping[str, Any] | None = None,
    outputs: Sequence[Mapping[str, Any]] = (),
    flow_run_id: str | None = None,
    note: str | None = None,
) -> Pending:
    """Turn a loaded asset into a :class:`Pending` publication (its manifest built).

    The load warnings and skipped columns go into the manifest (a ``note`` is counted
    among the warnings too).
    """
    warnings = dict(loaded["warnings"])
    if note is not None:
        warnings[note] = 1
    manifest = manifests.build_manifest(
        **target,
        status="ok",
        version=version,
        source_reference=source_reference,
        input=input,
        spikedata=loaded["spikedata"],
        metadata=loaded["metadata"],
        flow_run_id=flow_run_id,
        warnings=warnings,
        skipped_columns=loaded["skipped_columns"],
    )
    return {
        "target": target,
        "status": "ok",
        "units": loaded["units"],
        "manifest": manifest,
        "outputs": [dict(output) for output in outputs],
        "raster": loaded["raster"],
        "seconds": seconds,
        "note": note,
    }


def removal(target: Target, manifest: dict[str, Any], seconds: float) -> Pending:
    """The :class:`Pending` that deletes a failed asset's rows (its manifest is written)."""
    return {
        "target": target,
        "status": "failed",
        "units": None,
        "manifest": manifest,
        "outputs": [],
        "raster": None,
        "seconds": seconds,
        "note": None,
    }


@task(name="convert-raw-to-zarr")
def convert_raw_to_zarr(path: str, lake: Lake, target: Target) -> dict[str, Any]:
    """Save a local NWB file's raw ElectricalSeries as Zarr under ``<lake>/raw/``."""
    return save_nwb_recording_as_zarr(
        path, lake.raw_path(target["asset_id"]), overwrite=True, provenance=dict(target)
    )
