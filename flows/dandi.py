"""Ingest dandisets from the DANDI archive into the lake."""

from __future__ import annotations

import os
import time
from typing import Any

from prefect import flow, task, unmapped
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.config import CONFIG_DIR, DandisetsConfig, load_config
from spikelab.exceptions import DigestMismatchError, UnsafeRemoteDataError
from spikelab.flows._publish import publish_results
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    finish_run,
    guarded,
    in_order,
    is_current,
    key_of,
    known_assets,
    manifest_path,
    outcome,
    run_state,
    run_summary,
    skipped,
    staged_or_reload,
)
from spikelab.ids import normalize_dandiset_id, normalize_version
from spikelab.io import delta_lake
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake, resolve_lake
from spikelab.io.manifest import write_manifest
from spikelab.loaders import LOADER_VERSIONS
from spikelab.loaders.dandi import DEFAULT_API_BASE, DandiAsset, is_zarr_asset
from spikelab.loaders.nwb import has_electrical_series
from spikelab.tasks.dandi import (
    clear_digest_failure,
    describe_dandi_asset,
    digest_failure,
    download_dandi_asset,
    expire_downloads,
    list_dandi_assets,
    record_digest_failure,
    remove_download,
)
from spikelab.tasks.load import (
    StagedUnits,
    Target,
    load_dandi_streamed,
    load_nwb,
    read_staged,
)
from spikelab.tasks.outputs import Pending, convert_raw_to_zarr, prepare_publication

MAX_CONCURRENT_ASSETS = 4


def asset_target(dandiset_id: str, asset: dict[str, Any]) -> Target:
    """Where an asset's outputs go in the lake."""
    return {"source": "dandi", "dataset_id": dandiset_id, "asset_id": asset["asset_id"]}


def asset_content_id(record: DandiAsset) -> str:
    """What the lake must hold to skip an asset: its id, published digest and loader version."""
    digest = ",".join(f"{kind}={value}" for kind, value in record.published_digest.items())
    return f"dandi:{record.asset_id}:{digest}:nwb-v{LOADER_VERSIONS['nwb']}"


def listed_id(asset: dict[str, Any]) -> str | None:
    """An asset's identity as the listing gives it: asset id, blob id and loader version.

    The archive never changes the bytes behind an asset id (a new upload is a new asset),
    so this names the same content as the digest does, without a request per asset.
    """
    if not asset.get("blob_id"):
        return None
    return f"dandi:{asset['asset_id']}:blob={asset['blob_id']}:nwb-v{LOADER_VERSIONS['nwb']}"


def unchanged_outcome(
    lake: Lake, known: AssetState | None, dandiset_id: str, asset: dict[str, Any]
) -> Outcome | None:
    """The ``skipped`` outcome of a listed asset the lake already holds, else None.

    ``known`` is the asset's entry of the run's one read of the lake's assets table:
    an unchanged asset costs no task run and no request.
    """
    identity = listed_id(asset)
    if identity is None or not is_current(known, identity, field="listed_id"):
        return None
    return skipped(lake, asset_target(dandiset_id, asset), time.monotonic(), known)


def asset_reference(api_base: str, dandiset_id: str, version: str, asset_id: str) -> str:
    """The API URL of an asset in a dandiset version (its ``source_reference``)."""
    return f"{api_base}/dandisets/{dandiset_id}/versions/{version}/assets/{asset_id}/"


def refused_outcome(
    lake: Lake, dandiset_id: str, version: str, asset: dict[str, Any]
) -> Outcome | Pending:
    """The ``failed`` result of a listing entry whose identifier was refused.

    Its manifest goes under the entry's safe ``refused-<hash>`` key, never a path built
    from what the server sent.
    """

    def refuse(started: float) -> Outcome:
        raise UnsafeRemoteDataError(asset["refused"])

    return guarded(lake, asset_target(dandiset_id, asset), refuse, version=version)


def zarr_outcome(
    lake: Lake, dandiset_id: str, version: str, api_base: str, asset: dict[str, Any]
) -> Outcome:
    """The ``skipped`` outcome of a Zarr asset: spikelab ingests NWB HDF5 assets only."""
    started = time.monotonic()
    target = asset_target(dandiset_id, asset)
    reference = asset_reference(api_base, dandiset_id, version, asset["asset_id"])
    path = manifest_path(lake, target)
    manifest = write_manifest(
        path,
        **target,
        status="skipped",
        version=version,
        source_reference=reference,
        input={"url": reference, "path": asset["path"], "zarr_id": asset.get("zarr_id")},
        error=(
            f"zarr asset: {asset['path']} is stored as Zarr, not as an NWB HDF5 file; "
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


@task(name="ingest-dandi-asset", task_run_name="ingest {asset[path]}")
def ingest_dandi_asset(
    asset: dict[str, Any],
    dandiset_id: str,
    version: str,
    lake: Lake,
    known: AssetState | None,
    raw_zarr: bool,
    api_base: str,
    refresh: bool,
    transfer: str = "stream",
) -> Outcome | Pending:
    """Ingest one asset: describe, skip if unchanged, stream or download, load, stage.

    ``known`` is what the lake holds for the asset (None: nothing, or a refresh). A
    download that fails its digest check is recorded in the cache; a later streamed load
    of the same asset and digest then says so in its manifest (input field
    ``digest_failed_before``, an entry in ``warnings``) and in the run summary's ``error``
    column, and logs a warning.
    """
    target = asset_target(dandiset_id, asset)
    reference = asset_reference(api_base, dandiset_id, version, asset["asset_id"])

    def load(record: DandiAsset, content_id: str) -> tuple[str | None, StagedUnits]:
        if transfer == "stream" and not raw_zarr:  # raw traces need the whole file
            staged = staged_or_reload(
                load_dandi_streamed,
                refresh,
                asset_id=record,  # the loader takes the record: no second metadata request
                api_base=api_base,
                target=target,
                content_id=content_id,
                version=version,
            )
            return None, staged
        path = download_dandi_asset(record)
        staged = staged_or_reload(
            load_nwb, refresh, path=path, target=target, content_id=content_id, allow_no_units=True
        )
        return path, staged

    def work(started: float) -> Outcome | Pending:
        record = describe_dandi_asset(asset["asset_id"], api_base, dandiset_id, version)
        content_id = asset_content_id(record)
        if is_current(known, content_id):
            return skipped(lake, target, started, known)
        try:
            path, staged = load(record, content_id)
        except DigestMismatchError as error:
            record_digest_failure(record, error)
            raise
        metadata = staged["metadata"]
        failed_before = None
        if metadata.get("digest_verified", True):
            clear_digest_failure(record)
        else:
            failed_before = digest_failure(record)
        outputs = []
        if path is not None and raw_zarr and has_electrical_series(path):
            raw = convert_raw_to_zarr(path, lake, target)
            outputs.append({"path": raw["zarr_path"], "sha256": None, "rows": raw["n_samples"]})
        note = None
        if failed_before is not None:
            note = digest_warning(failed_before)
            get_run_logger().warning("%s: %s", asset["asset_id"], note)
        pending = prepare_publication(
            target,
            read_staged(staged),
            seconds=time.monotonic() - started,
            version=version,
            source_reference=reference,
            input={
                "url": reference,
                **input_fields(record, metadata, content_id),
                "listed_id": listed_id(asset),
                "digest_failed_before": failed_before is not None,
            },
            outputs=outputs,
            flow_run_id=current_flow_run_id(),
            note=note,
        )
        if path is not None:
            remove_download(path)
        return pending

    return guarded(lake, target, work, version=version, source_reference=reference)


@flow(
    name="ingest-dandiset",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENT_ASSETS),  # type: ignore[arg-type]
)
def ingest_dandiset(
    dandiset_id: str,
    version: str = "draft",
    path_glob: str | None = "*.nwb",
    lake: str | None = None,
    raw_zarr: bool = False,
    max_assets: int | None = None,
    api_base: str = DEFAULT_API_BASE,
    refresh: bool = False,
    transfer: str = "stream",
) -> dict[str, Any]:
    """Ingest a dandiset version's NWB assets into the lake, a few assets at a time.

    Assets whose published digest is already in the lake are ``skipped``; an asset that
    fails is recorded ``failed`` with its error and the run goes on. A listing entry whose
    identifier is malformed (an asset id that is not a UUID, say) is recorded ``failed``
    under a ``refused-<hash>`` key without any request about it; a Zarr asset is
    ``skipped`` with the reason ``zarr asset``. Embargoed dandisets read their token from
    ``DANDI_API_TOKEN`` (never a parameter). Each run starts by deleting partial downloads
    of the cache older than ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (default 72); younger ones
    are resumed.

    Parameters
    ----------
    dandiset_id : str
        Six-digit id, e.g. ``"000006"``.
    version : str, default: "draft"
        Dandiset version.
    path_glob : str | None, default: "*.nwb"
        Server-side filter on asset paths.
    lake : str | None, default: None
        Lake root: a folder or an ``s3://`` URL; None means ``$SPIKELAB_LAKE``, else
        ``./spikelab-lake`` (made absolute before anything is recorded).
    raw_zarr : bool, default: False
        Also save each asset's raw ElectricalSeries as Zarr under ``<lake>/raw/``.
    max_assets : int | None, default: None
        Ingest at most this many assets (in path order).
    api_base : str, default: the public archive
        DANDI API root.
    refresh : bool, default: False
        Ignore the lake and the task cache: load everything again.
    transfer : {"stream", "download"}, default: "stream"
        ``stream`` reads only each asset's Units over HTTP range requests (the whole-file
        digest is then not checked; the manifest says so), falling back to the verified
        download when streaming fails; ``download`` always downloads and verifies. Raw
        Zarr conversion always downloads.

    Returns
    -------
    dict
        The run summary (also in ``<lake>/runs/<flow run id>.json``).
    """
    if transfer not in ("stream", "download"):
        raise ValueError(f"transfer must be 'stream' or 'download', got {transfer!r}")
    dandiset = normalize_dandiset_id(dandiset_id)
    version = normalize_version(version)
    where = Lake(resolve_lake(lake))
    expire_downloads()
    assets = list_dandi_assets(dandiset, version, path_glob, api_base)
    if max_assets is not None:
        assets = assets[:max_assets]
    index = known_assets(where, refresh)
    known = [index.get(key_of(asset_target(dandiset, asset))) for asset in assets]
    items: list[Any] = []
    for asset, state in zip(assets, known, strict=True):  # decided without a task run
        if "refused" in asset:
            items.append(refused_outcome(where, dandiset, version, asset))
        elif is_zarr_asset(asset):
            items.append(zarr_outcome(where, dandiset, version, api_base, asset))
        else:
            items.append(unchanged_outcome(where, state, dandiset, asset))
    changed = [i for i, item in enumerate(items) if item is None]
    items = in_order(
        items,
        ingest_dandi_asset.map(
            [assets[i] for i in changed],
            dandiset_id=unmapped(dandiset),
            version=unmapped(version),
            lake=unmapped(where),
            known=[known[i] for i in changed],
            raw_zarr=unmapped(raw_zarr),
            api_base=unmapped(api_base),
            refresh=unmapped(refresh),
            transfer=unmapped(transfer),
        ),
    )
    parameters = {
        "dandiset_id": dandiset,
        "version": version,
        "path_glob": path_glob,
        "raw_zarr": raw_zarr,
        "max_assets": max_assets,
        "refresh": refresh,
        "transfer": transfer,
    }
    outcomes = publish_results(where, items, dandiset)
    return finish_run(where, "ingest-dandiset", parameters, outcomes)  # type: ignore[return-value]


@flow(name="ingest-dandisets")
def ingest_dandisets(
    config: str = str(CONFIG_DIR / "dandisets.yaml"),
    lake: str | None = None,
    api_base: str = DEFAULT_API_BASE,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """The nightly run: ingest every dandiset listed in ``config`` (a YAML file), then compact.

    The lake's tables are compacted at the end (:func:`spikelab.io.delta_lake.compact`:
    small files bin-packed, unreferenced old files removed, a checkpoint written); readers
    keep a consistent snapshot meanwhile. Every dandiset is ingested even when an earlier
    one had failed assets; the run then ends ``Failed`` (like ``ingest-dandiset``),
    carrying the list of summaries.

    Returns
    -------
    list of dict
        One run summary per dandiset.
    """
    entries = load_config(os.fspath(config), DandisetsConfig).dandisets
    root = resolve_lake(lake)
    summaries = [
        run_summary(
            ingest_dandiset(
                entry.id,
                version=entry.version,
                path_glob=entry.path_glob,
                lake=root,
                max_assets=entry.max_assets,
                api_base=api_base,
                refresh=refresh,
                transfer=entry.transfer,
                return_state=True,
            )
        )
        for entry in entries
    ]
    failed = sum(summary["counts"]["failed"] for summary in summaries)
    compacted = delta_lake.compact(root)
    get_run_logger().info("lake compacted: %s", compacted)
    message = f"{len(summaries)} dandisets, {failed} failed assets"
    return run_state(message, summaries, failed=failed > 0)  # type: ignore[return-value]
