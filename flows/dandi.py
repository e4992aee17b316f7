"""Ingest dandisets from the DANDI archive into the lake."""

from __future__ import annotations

import gc
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast, get_args

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.choices import TaskRunnerName, Transfer
from spikelab.config import (
    CONFIG_DIR,
    MAX_CONCURRENCY,
    Concurrency,
    DandisetEntry,
    DandisetsConfig,
    load_config,
    resolve_concurrency,
)
from spikelab.exceptions import DigestMismatchError, UnsafeRemoteDataError
from spikelab.flows._publish import publish_as_they_come
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    finish_run,
    guarded,
    is_current,
    key_of,
    known_assets,
    manifest_path,
    outcome,
    run_state,
    run_summary,
    skipped,
)
from spikelab.ids import DandisetRef
from spikelab.io import delta_upkeep
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake, resolve_lake
from spikelab.io.manifest import write_manifest
from spikelab.loaders import LOADER_VERSIONS
from spikelab.loaders.dandi import DEFAULT_API_BASE, DandiAsset, RefusedAsset
from spikelab.loaders.nwb import has_electrical_series
from spikelab.tasks.dandi import (
    clear_digest_failure,
    describe_dandi_asset,
    digest_failure,
    download_dandi_asset,
    expire_downloads,
    list_dandi_assets,
    load_downloaded,
    load_streamed,
    record_digest_failure,
    remove_download,
)
from spikelab.tasks.load import Loaded, Target
from spikelab.tasks.outputs import Pending, convert_raw_to_zarr, prepare_publication

MAX_ASSETS_PER_TASK_RUN = 8


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
    publication. ``known`` is what the lake holds for the asset (None: nothing, or a
    refresh). A download that fails its digest check is recorded in the cache; a later
    streamed load of the same asset and digest then says so in its manifest (input field
    ``digest_failed_before``, an entry in ``warnings``) and in the run summary's ``error``
    column, and logs a warning.
    """
    target = asset_target(run.dandiset, asset.asset_id)
    reference = asset.source_reference
    version = run.dandiset.version

    def load(record: DandiAsset) -> tuple[str | None, Loaded]:
        if run.transfer == "stream" and not run.raw_zarr:  # raw traces need the whole file
            return None, load_streamed(record, target)
        path = download_dandi_asset(record)
        return path, load_downloaded(path, target)

    def work(started: float) -> Outcome | Pending:
        record = describe_dandi_asset(asset)
        content_id = asset_content_id(record)
        if is_current(known, content_id):
            return skipped(run.lake, target, started, known)
        try:
            path, loaded = load(record)
        except DigestMismatchError as error:
            record_digest_failure(record, error)
            raise
        metadata = loaded["metadata"]
        failed_before = None
        if metadata.get("digest_verified", True):
            clear_digest_failure(record)
        else:
            failed_before = digest_failure(record)
        outputs = []
        if path is not None and run.raw_zarr and has_electrical_series(path):
            raw = convert_raw_to_zarr.fn(path, run.lake, target)
            outputs.append({"path": raw["zarr_path"], "sha256": None, "rows": raw["n_samples"]})
        note = None
        if failed_before is not None:
            note = digest_warning(failed_before)
            get_run_logger().warning("%s: %s", asset.asset_id, note)
        pending = prepare_publication(
            target,
            loaded,
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

    return guarded(run.lake, target, work, version=version, source_reference=reference)


class AssetResults:
    """A task run's per-asset results, in one box.

    Prefect keeps a small record of every object a task run returns and of each item of a
    returned list or dict, for the whole flow run; one box per task run keeps that from
    growing with the number of assets. It also shows short in Prefect's logs.
    """

    __slots__ = ("items",)

    def __init__(self, items: list[Outcome | Pending]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"<results of {len(self.items)} asset(s)>"


@task(
    name="ingest-dandi-assets",
    task_run_name="ingest {label}",
    cache_policy=NO_CACHE,  # the lake's assets table decides what is loaded again
    persist_result=False,  # the results go to the flow's publisher, in memory
)
def ingest_dandi_assets(
    assets: list[DandiAsset], known: list[AssetState | None], run: DandiRun, label: str
) -> AssetResults | State:
    """Ingest a few assets of a dandiset, one after the other (see :func:`ingest_asset`).

    The task run ends ``Failed``, naming the failed assets, when any of them failed; its
    result is each asset's outcome or pending publication either way. No Prefect retries:
    the HTTP layer retries each request's transient failures, and an asset that failed is
    loaded again by the next run (the lake does not hold it).
    """
    results = AssetResults([ingest_asset(a, k, run) for a, k in zip(assets, known, strict=True)])
    failed = [a.path for a, r in zip(assets, results.items, strict=True) if r["status"] == "failed"]
    if failed:
        message = f"{len(failed)} of {len(assets)} asset(s) failed: {', '.join(failed)}"
        return Failed(message=message, data=results)
    return results


def batch_size(changed: int, concurrency: int) -> int:
    """Assets per task run: one when there are few, up to ``MAX_ASSETS_PER_TASK_RUN``.

    Enough task runs that every one of ``concurrency`` slots gets about two; a task run
    costs the Prefect server about 20 KB of database and 50 ms of CPU, so a large
    dandiset shares them among a few assets.
    """
    return max(1, min(MAX_ASSETS_PER_TASK_RUN, -(-changed // (2 * concurrency))))


def batch_label(assets: Sequence[DandiAsset]) -> str:
    """A task run's name: its asset's path, or the first path and how many more."""
    first = assets[0].path
    return first if len(assets) == 1 else f"{first} (+{len(assets) - 1} more)"


def run_in_flight(
    batches: Iterable[list[int]],
    submit: Callable[[list[int]], PrefectFuture[Any]],
    window: int,
) -> Iterator[tuple[int, Outcome | Pending]]:
    """Submit ``batches`` (lists of asset indexes), at most ``window`` task runs at once.

    Yields ``(index, result)`` as each task run finishes, and forgets its future, so the
    run holds at most ``window`` task runs' data whatever the number of assets.
    """
    finished: queue.SimpleQueue[PrefectFuture[Any]] = queue.SimpleQueue()
    running: dict[PrefectFuture[Any], list[int]] = {}
    pending = iter(batches)

    def fill() -> None:
        while len(running) < window and (batch := next(pending, None)) is not None:
            future = submit(batch)
            running[future] = batch
            future.add_done_callback(finished.put)

    fill()
    while running:
        future = finished.get()
        indexes = running.pop(future)
        fill()
        results = future.result(raise_on_failure=False)
        if isinstance(results, BaseException):  # a crash, not a failed asset
            raise results
        yield from zip(indexes, results.items, strict=True)


@flow(
    name="ingest-dandiset",
    # threads are made as needed: the run keeps at most `concurrency` task runs going
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_CONCURRENCY),  # type: ignore[arg-type]
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
    transfer: Transfer = "stream",
    concurrency: Concurrency | None = None,
) -> dict[str, Any]:
    """Ingest a dandiset version's NWB assets into the lake, many assets at a time.

    Assets whose published digest is already in the lake are ``skipped``; an asset that
    fails is recorded ``failed`` with its error and the run goes on. A listing entry whose
    identifier is malformed (an asset id that is not a UUID, say) is recorded ``failed``
    under a ``refused-<hash>`` key without any request about it; a Zarr asset is
    ``skipped`` with the reason ``zarr asset``. Embargoed dandisets read their token from
    ``DANDI_API_TOKEN`` (never a parameter). Each run starts by deleting partial downloads
    of the cache older than ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (default 72); younger ones
    are resumed.

    One task run ingests one changed asset, or a few of them (up to 8) in a large run; it
    ends ``Failed`` when one of its assets failed. Requests to the API are capped at
    ``SPIKELAB_DANDI_REQUESTS_PER_SECOND`` (default 40) per second.

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
        Ignore the lake: load everything again.
    transfer : {"stream", "download"}, default: "stream"
        ``stream`` reads only each asset's Units over HTTP range requests (the whole-file
        digest is then not checked; the manifest says so), falling back to the verified
        download when streaming fails; ``download`` always downloads and verifies. Raw
        Zarr conversion always downloads.
    concurrency : int | None, default: None
        Assets read at once (1 to 256). None: ``$SPIKELAB_CONCURRENCY``, else 16 per core
        (32 to 128). The CPU-bound steps of at most one asset per core run at once.

    Returns
    -------
    dict
        The run summary (also in ``<lake>/runs/<flow run id>.json``).
    """
    if transfer not in get_args(Transfer):
        raise ValueError(f"transfer must be 'stream' or 'download', got {transfer!r}")
    in_flight = resolve_concurrency(concurrency)
    # What is alive now (Prefect, pydantic, pyarrow: millions of objects) lives on: keep
    # it out of the collector's way, which otherwise spends a third of the run on it.
    gc.freeze()
    dandiset = DandisetRef.parse(dandiset_id, version)
    where = Lake(resolve_lake(lake))
    expire_downloads()
    assets = list_dandi_assets(dandiset, path_glob, api_base)
    if max_assets is not None:
        assets = assets[:max_assets]
    index = known_assets(where, refresh)
    known = [index.get(key_of(asset_target(dandiset, asset.asset_id))) for asset in assets]
    del index
    decided: list[Outcome | Pending | None] = []
    for asset, state in zip(assets, known, strict=True):  # decided without a task run
        if isinstance(asset, RefusedAsset):
            decided.append(refused_outcome(where, dandiset, asset))
        elif asset.is_zarr:
            decided.append(zarr_outcome(where, dandiset, asset))
        else:
            decided.append(unchanged_outcome(where, state, dandiset, asset))
    changed = [i for i, item in enumerate(decided) if item is None]
    size = batch_size(len(changed), in_flight)
    run = DandiRun(dandiset, where, raw_zarr, transfer)

    def submit(batch: list[int]) -> PrefectFuture[Any]:
        chosen = [cast(DandiAsset, assets[i]) for i in batch]  # changed: never refused
        return ingest_dandi_assets.submit(
            chosen, [known[i] for i in batch], run, batch_label(chosen)
        )

    batches = (changed[i : i + size] for i in range(0, len(changed), size))
    results = run_in_flight(batches, submit, in_flight)  # each reads one asset at a time
    parameters = {
        "dandiset_id": dandiset.dandiset_id,
        "version": dandiset.version,
        "path_glob": path_glob,
        "raw_zarr": raw_zarr,
        "max_assets": max_assets,
        "refresh": refresh,
        "transfer": transfer,
        "concurrency": in_flight,
    }
    outcomes = publish_as_they_come(where, decided, results, dandiset.dandiset_id)
    return finish_run(where, "ingest-dandiset", parameters, outcomes)  # type: ignore[return-value]


@flow(name="ingest-dandisets")
def ingest_dandisets(
    config: str = str(CONFIG_DIR / "dandisets.yaml"),
    lake: str | None = None,
    api_base: str = DEFAULT_API_BASE,
    refresh: bool = False,
    concurrency: Concurrency | None = None,
    dandisets: list[DandisetEntry] | None = None,
    task_runner: TaskRunnerName = "threads",
    dask_address: str | None = None,
) -> list[dict[str, Any]]:
    """The nightly run: ingest every dandiset listed in ``config`` (a YAML file), then compact.

    The lake's tables are compacted at the end (:func:`spikelab.io.delta_upkeep.compact`:
    small files bin-packed, unreferenced old files removed, a checkpoint written); readers
    keep a consistent snapshot meanwhile. Every dandiset is ingested even when an earlier
    one had failed assets; the run then ends ``Failed`` (like ``ingest-dandiset``),
    carrying the list of summaries.

    Parameters
    ----------
    config : str, default: the packaged ``configs/dandisets.yaml``
        The YAML list of dandisets.
    lake : str | None, default: None
        Lake root (None: ``$SPIKELAB_LAKE``, else ``./spikelab-lake``).
    api_base : str, default: the public archive
        DANDI API root.
    refresh : bool, default: False
        Load every asset again.
    concurrency : int | None, default: None
        Assets read at once, as for :func:`ingest_dandiset`.
    dandisets : list of DandisetEntry | None, default: None
        The dandisets to ingest (id, version, path_glob, max_assets, transfer), given in
        the run (the Prefect UI shows a form) instead of read from ``config``.
    task_runner : {"threads", "dask"}, default: "threads"
        Where each dandiset's task runs go: a thread pool, or Dask (see
        :func:`spikelab.flows.runners.with_task_runner`).
    dask_address : str | None, default: None
        Scheduler address of a running Dask cluster (with ``task_runner="dask"``); None
        starts a local one per dandiset.

    Returns
    -------
    list of dict
        One run summary per dandiset.
    """
    from spikelab.flows.runners import with_task_runner

    if dandisets is not None:
        entries = DandisetsConfig(dandisets=dandisets).dandisets
    else:
        entries = load_config(os.fspath(config), DandisetsConfig).dandisets
    root = resolve_lake(lake)
    ingest = with_task_runner(ingest_dandiset, task_runner, dask_address=dask_address)
    summaries = [
        run_summary(
            ingest(
                entry.id,
                version=entry.version,
                path_glob=entry.path_glob,
                lake=root,
                max_assets=entry.max_assets,
                api_base=api_base,
                refresh=refresh,
                transfer=entry.transfer,
                concurrency=concurrency,
                return_state=True,
            )
        )
        for entry in entries
    ]
    failed = sum(summary["counts"]["failed"] for summary in summaries)
    compacted = delta_upkeep.compact(root)
    get_run_logger().info("lake compacted: %s", compacted)
    message = f"{len(summaries)} dandisets, {failed} failed assets"
    return run_state(message, summaries, failed=failed > 0)  # type: ignore[return-value]
