"""One DANDI asset in a run: its lake key and content ids, and how it is ingested.

The plain steps of an asset (describe, skip if unchanged, stream or download, load,
prepare the publication) and the outcomes the flow decides from the listing alone
(refused entries, Zarr assets, unchanged assets).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from prefect.logging import get_run_logger

from spikelab.exceptions import DigestMismatchError, UnsafeRemoteDataError
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    guarded,
    is_current,
    manifest_path,
    outcome,
    skipped,
)
from spikelab.ids import DandisetRef
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake
from spikelab.io.manifest import write_manifest
from spikelab.loaders import LOADER_VERSIONS
from spikelab.loaders.dandi import DandiAsset, RefusedAsset
from spikelab.loaders.nwb import has_electrical_series
from spikelab.tasks.dandi import (
    clear_digest_failure,
    describe_dandi_asset,
    digest_failure,
    download_dandi_asset,
    load_downloaded,
    load_streamed,
    record_digest_failure,
    remove_download,
)
from spikelab.tasks.load import Loaded, Target
from spikelab.tasks.outputs import Pending, convert_raw_to_zarr, prepare_publication


def asset_target(dandiset: DandisetRef, asset_id: str) -> Target:
    """Where an asset's outputs go in the lake."""
    return {"source": "dandi", "dataset_id": dandiset.dandiset_id, "asset_id": asset_id}


def asset_content_id(record: DandiAsset) -> str:
    """What the lake must hold to skip an asset: its id, published digest and loader version."""
    digest = ",".join(f"{kind}={value}" for kind, value in record.published_digest.items())
    return f"dandi:{record.asset_id}:{digest}:nwb-v{LOADER_VERSIONS['nwb']}"


def listed_id(asset: DandiAsset) -> str | None:
    """An asset's identity as the listing gives it: asset id, blob id and loader version.

    The archive never changes the bytes behind an asset id (a new upload is a new asset),
    so this names the same content as the digest does, without a request per asset.
    """
    if asset.blob_id is None:
        return None
    return f"dandi:{asset.asset_id}:blob={asset.blob_id}:nwb-v{LOADER_VERSIONS['nwb']}"


def unchanged_outcome(
    lake: Lake, known: AssetState | None, dandiset: DandisetRef, asset: DandiAsset
) -> Outcome | None:
    """The ``skipped`` outcome of a listed asset the lake already holds, else None.

    ``known`` is the asset's entry of the run's one read of the lake's assets table:
    an unchanged asset costs no task run and no request.
    """
    identity = listed_id(asset)
    if identity is None or not is_current(known, identity, field="listed_id"):
        return None
    return skipped(lake, asset_target(dandiset, asset.asset_id), time.monotonic(), known)


def refused_outcome(lake: Lake, dandiset: DandisetRef, asset: RefusedAsset) -> Outcome | Pending:
    """The ``failed`` result of a listing entry whose identifier was refused.

    Its manifest goes under the entry's safe ``refused-<hash>`` key, never a path built
    from what the server sent.
    """

    def refuse(started: float) -> Outcome:
        raise UnsafeRemoteDataError(asset.problem)

    target = asset_target(dandiset, asset.asset_id)
    return guarded(lake, target, refuse, version=dandiset.version)


def zarr_outcome(lake: Lake, dandiset: DandisetRef, asset: DandiAsset) -> Outcome:
    """The ``skipped`` outcome of a Zarr asset: spikelab ingests NWB HDF5 assets only."""
    started = time.monotonic()
    target = asset_target(dandiset, asset.asset_id)
    reference = asset.source_reference
    path = manifest_path(lake, target)
    manifest = write_manifest(
        path,
        **target,
        status="skipped",
        version=dandiset.version,
        source_reference=reference,
        input={"url": reference, "path": asset.path, "zarr_id": asset.zarr_id},
        error=(
            f"zarr asset: {asset.path} is stored as Zarr, not as an NWB HDF5 file; "
            "the DANDI flow ingests NWB HDF5 assets only"
        ),
        flow_run_id=current_flow_run_id(),
    )
    return outcome(target, "skipped", time.monotonic() - started, path, manifest)


def digest_warning(failure: dict[str, Any]) -> str:
    """What the manifest and run summary say about an asset a download found corrupt."""
    return (
        f"warning: a download of this asset failed digest verification at "
        f"{failure['failed_at']} ({failure['error']}); these Units were streamed, and "
        "streaming cannot check the whole-file digest: run with transfer='download' to "
        "verify the file"
    )


def input_fields(record: DandiAsset, metadata: dict[str, Any], content_id: str) -> dict[str, Any]:
    """What a manifest records of the asset read: path, size, digests, how it was read."""
    return {
        "path": record.path,
        "size": record.size,
        **record.published_digest,
        "content_id": content_id,
        "transfer": metadata.get("transfer", "downloaded"),
        "bytes_read": metadata.get("bytes_read", record.size),
        "digest_verified": metadata.get("digest_verified", True),
    }


@dataclass(frozen=True)
class DandiRun:
    """What every asset of one dandiset run shares (one value per task run, not per asset)."""

    dandiset: DandisetRef
    lake: Lake
    raw_zarr: bool
    transfer: str


def ingest_asset(asset: DandiAsset, known: AssetState | None, run: DandiRun) -> Outcome | Pending:
    """Ingest one asset: describe, skip if unchanged, stream or download, load, prepare.

    Plain steps in one task run, the data kept in memory from the read to the returned
    publication; a failure becomes the asset's ``failed`` outcome. ``known`` is what the
    lake holds for the asset (None: nothing, or a refresh). A download that fails its
    digest check is recorded in the cache; a later streamed load of the same asset and
    digest then says so in its manifest (input field ``digest_failed_before``, an entry in
    ``warnings``) and in the run summary's ``error`` column, and logs a warning.
    """
    target = asset_target(run.dandiset, asset.asset_id)
    return guarded(
        run.lake,
        target,
        partial(_ingest, asset, known, run, target),
        version=run.dandiset.version,
        source_reference=asset.source_reference,
    )


def _ingest(
    asset: DandiAsset, known: AssetState | None, run: DandiRun, target: Target, started: float
) -> Outcome | Pending:
    record = describe_dandi_asset(asset)
    content_id = asset_content_id(record)
    if is_current(known, content_id):
        return skipped(run.lake, target, started, known)
    path, loaded = _load(record, target, run)
    metadata = loaded["metadata"]
    failed_before = _digest_history(record, metadata)
    note = None
    if failed_before is not None:
        note = digest_warning(failed_before)
        get_run_logger().warning("%s: %s", asset.asset_id, note)
    pending = prepare_publication(
        target,
        loaded,
        seconds=time.monotonic() - started,
        version=run.dandiset.version,
        source_reference=record.source_reference,
        input={
            "url": record.source_reference,
            **input_fields(record, metadata, content_id),
            "listed_id": listed_id(asset),
            "digest_failed_before": failed_before is not None,
        },
        outputs=[] if path is None else _raw_outputs(path, run, target),
        flow_run_id=current_flow_run_id(),
        note=note,
    )
    if path is not None:
        remove_download(path)
    return pending


def _load(record: DandiAsset, target: Target, run: DandiRun) -> tuple[str | None, Loaded]:
    """Stream the asset's Units, or download the file (raw traces need all of it)."""
    try:
        if run.transfer == "stream" and not run.raw_zarr:
            return None, load_streamed(record, target)
        path = download_dandi_asset(record)
        return path, load_downloaded(path, target)
    except DigestMismatchError as error:
        record_digest_failure(record, error)
        raise


def _digest_history(record: DandiAsset, metadata: dict[str, Any]) -> dict[str, Any] | None:
    """A verified read clears the asset's digest failure; an unverified one returns it."""
    if metadata.get("digest_verified", True):
        clear_digest_failure(record)
        return None
    return digest_failure(record)


def _raw_outputs(path: str, run: DandiRun, target: Target) -> list[dict[str, Any]]:
    """The raw ElectricalSeries saved as Zarr under the lake, when the run asks for it."""
    if not (run.raw_zarr and has_electrical_series(path)):
        return []
    raw = convert_raw_to_zarr.fn(path, run.lake, target)
    return [{"path": raw["zarr_path"], "sha256": None, "rows": raw["n_samples"]}]
