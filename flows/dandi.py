"""Ingest dandisets from the DANDI archive into the lake."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.config import CONFIG_DIR, DandisetsConfig, load_config
from spikelab.flows._runs import (
    Outcome,
    collect,
    current_flow_run_id,
    finish_run,
    guarded,
    loaded_already,
    manifest_path,
    outcome,
    staged_or_reload,
)
from spikelab.io.lake import DEFAULT_LAKE
from spikelab.loaders import LOADER_VERSIONS
from spikelab.loaders._dandi_client import DEFAULT_API_BASE, normalize_dandiset_id
from spikelab.loaders.nwb_recording import has_electrical_series
from spikelab.tasks.dandi import (
    describe_dandi_asset,
    download_dandi_asset,
    list_dandi_assets,
    remove_download,
)
from spikelab.tasks.load import Target, load_dandi_streamed, load_nwb
from spikelab.tasks.outputs import convert_raw_to_zarr, write_manifest, write_units_table

MAX_CONCURRENT_ASSETS = 4
MAX_MANIFEST_READS = 16


def asset_target(dandiset_id: str, asset: dict[str, Any]) -> Target:
    """Where an asset's outputs go in the lake."""
    return {"source": "dandi", "dataset_id": dandiset_id, "asset_id": asset["asset_id"]}


def asset_content_id(record: dict[str, Any]) -> str:
    """What the lake must hold to skip an asset: its id, published digest and loader version."""
    digest = ",".join(f"{kind}={value}" for kind, value in record["digest"].items())
    return f"dandi:{record['asset_id']}:{digest}:nwb-v{LOADER_VERSIONS['nwb']}"


def listed_id(asset: dict[str, Any]) -> str | None:
    """An asset's identity as the listing gives it: asset id, blob id and loader version.

    The archive never changes the bytes behind an asset id (a new upload is a new asset),
    so this names the same content as the digest does, without a request per asset.
    """
    if not asset.get("blob_id"):
        return None
    return f"dandi:{asset['asset_id']}:blob={asset['blob_id']}:nwb-v{LOADER_VERSIONS['nwb']}"


def unchanged_outcome(lake: str, dandiset_id: str, asset: dict[str, Any]) -> Outcome | None:
    """The ``skipped`` outcome of a listed asset the lake already holds, else None.

    Checked in the flow itself, so an unchanged asset costs no task run and no request.
    """
    identity = listed_id(asset)
    if identity is None:
        return None
    started = time.monotonic()
    target = asset_target(dandiset_id, asset)
    manifest = loaded_already(lake, target, identity, field="listed_id")
    if manifest is None:
        return None
    return outcome(target, "skipped", started, manifest_path(lake, target), manifest)


@task(name="ingest-dandi-asset", task_run_name="ingest {asset[path]}")
def ingest_dandi_asset(
    asset: dict[str, Any],
    dandiset_id: str,
    version: str,
    lake: str,
    raw_zarr: bool,
    api_base: str,
    refresh: bool,
    transfer: str = "stream",
) -> Outcome:
    """Ingest one asset: describe, skip if unchanged, stream or download, load, publish."""
    target = asset_target(dandiset_id, asset)
    reference = f"{api_base}/dandisets/{dandiset_id}/versions/{version}/assets/{asset['asset_id']}/"

    def work() -> tuple[str, dict[str, Any]]:
        record = describe_dandi_asset(asset["asset_id"], api_base)
        content_id = asset_content_id(record)
        existing = None if refresh else loaded_already(lake, target, content_id)
        if existing is not None:
            return "skipped", existing
        if transfer == "stream" and not raw_zarr:  # raw traces need the whole file
            path = None
            staged = staged_or_reload(
                load_dandi_streamed,
                refresh,
                asset_id=asset["asset_id"],
                api_base=api_base,
                target=target,
                content_id=content_id,
                version=version,
            )
        else:
            path = download_dandi_asset(record, api_base)
            staged = staged_or_reload(
                load_nwb,
                refresh,
                path=path,
                target=target,
                content_id=content_id,
                allow_no_units=True,
            )
        outputs = write_units_table(staged, lake, target)
        if path is not None and raw_zarr and has_electrical_series(path):
            raw = convert_raw_to_zarr(path, lake, target)
            outputs.append({"path": raw["zarr_path"], "sha256": None, "rows": raw["n_samples"]})
        metadata = staged["metadata"]
        manifest = write_manifest(
            lake,
            target,
            status="ok",
            version=version,
            source_reference=reference,
            input={
                "url": reference,
                "path": record["path"],
                "size": record["size"],
                **record["digest"],
                "content_id": content_id,
                "listed_id": listed_id(asset),
                "transfer": metadata.get("transfer", "downloaded"),
                "bytes_read": metadata.get("bytes_read", record["size"]),
                "digest_verified": metadata.get("digest_verified", True),
            },
            outputs=outputs,
            staged=staged,
            flow_run_id=current_flow_run_id(),
        )
        if path is not None:
            remove_download(path)
        return "ok", manifest

    return guarded(lake, target, work, version=version, source_reference=reference)


@flow(
    name="ingest-dandiset",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENT_ASSETS),  # type: ignore[arg-type]
)
def ingest_dandiset(
    dandiset_id: str,
    version: str = "draft",
    path_glob: str | None = "*.nwb",
    lake: str = DEFAULT_LAKE,
    raw_zarr: bool = False,
    max_assets: int | None = None,
    api_base: str = DEFAULT_API_BASE,
    refresh: bool = False,
    transfer: str = "stream",
) -> dict[str, Any]:
    """Ingest a dandiset version's NWB assets into the lake, a few assets at a time.

    Assets whose published digest is already in the lake are ``skipped``; an asset that
    fails is recorded ``failed`` with its error and the run goes on. Embargoed dandisets
    read their token from ``DANDI_API_TOKEN`` (never a parameter).

    Parameters
    ----------
    dandiset_id : str
        Six-digit id, e.g. ``"000006"``.
    version : str, default: "draft"
        Dandiset version.
    path_glob : str | None, default: "*.nwb"
        Server-side filter on asset paths.
    lake : str, default: "./spikelab-lake"
        Lake root: a folder or an ``s3://`` URL.
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
    assets = list_dandi_assets(dandiset, version, path_glob, api_base)
    if max_assets is not None:
        assets = assets[:max_assets]
    unchanged: dict[str, Outcome | None] = {}
    if not refresh:  # manifests on an object store are a request each: read several at once
        with ThreadPoolExecutor(max_workers=MAX_MANIFEST_READS) as pool:
            checks = pool.map(lambda asset: unchanged_outcome(lake, dandiset, asset), assets)
            unchanged = {a["asset_id"]: o for a, o in zip(assets, checks, strict=True)}
    changed = [a for a in assets if unchanged.get(a["asset_id"]) is None]
    futures = ingest_dandi_asset.map(
        changed,
        dandiset_id=unmapped(dandiset),
        version=unmapped(version),
        lake=unmapped(lake),
        raw_zarr=unmapped(raw_zarr),
        api_base=unmapped(api_base),
        refresh=unmapped(refresh),
        transfer=unmapped(transfer),
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
    ingested = {a["asset_id"]: o for a, o in zip(changed, collect(futures, dandiset), strict=True)}
    outcomes = [unchanged.get(a["asset_id"]) or ingested[a["asset_id"]] for a in assets]
    return finish_run(lake, "ingest-dandiset", parameters, outcomes)  # type: ignore[return-value]


@flow(name="ingest-dandisets")
def ingest_dandisets(
    config: str = str(CONFIG_DIR / "dandisets.yaml"),
    lake: str = DEFAULT_LAKE,
    api_base: str = DEFAULT_API_BASE,
    refresh: bool = False,
) -> list[dict[str, Any]]:
    """The nightly run: ingest every dandiset listed in ``config`` (a YAML file).

    Returns
    -------
    list of dict
        One run summary per dandiset.
    """
    entries = load_config(os.fspath(config), DandisetsConfig).dandisets
    return [
        ingest_dandiset(
            entry.id,
            version=entry.version,
            path_glob=entry.path_glob,
            lake=lake,
            max_assets=entry.max_assets,
            api_base=api_base,
            refresh=refresh,
            transfer=entry.transfer,
        )
        for entry in entries
    ]
