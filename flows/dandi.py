"""Ingest dandisets from the DANDI archive into the lake."""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from typing import Any, get_args

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
from spikelab.flows._dandi_asset import (
    DandiRun,
    asset_target,
    ingest_asset,
    refused_outcome,
    unchanged_outcome,
    zarr_outcome,
)
from spikelab.flows._in_flight import (
    AssetResults,
    Sealed,
    batch_size,
    dask_plan,
    run_in_flight,
)
from spikelab.flows._publish import publish_as_they_come
from spikelab.flows._runs import Outcome, finish_run, key_of, known_assets, run_state, run_summary
from spikelab.flows.runners import dask_threads
from spikelab.ids import DandisetRef
from spikelab.io import delta_upkeep
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake
from spikelab.loaders.dandi import DEFAULT_API_BASE, DandiAsset, RefusedAsset
from spikelab.tasks.dandi import expire_downloads, list_dandi_assets
from spikelab.tasks.outputs import Pending


@task(
    name="ingest-dandi-assets",
    task_run_name="ingest {label}",
    cache_policy=NO_CACHE,  # the lake's assets table decides what is loaded again
    persist_result=False,  # the results go to the flow's publisher, in memory
)
def ingest_dandi_assets(
    batch: Sealed[list[tuple[DandiAsset, AssetState | None]]], run: DandiRun, label: str
) -> AssetResults | State:
    """Ingest a few assets of a dandiset, one after the other (see :func:`ingest_asset`).

    ``batch`` holds each asset with what the lake knows of it. The task run ends
    ``Failed``, naming the failed assets, when any of them failed; its result is each
    asset's outcome or pending publication either way. No Prefect retries: the HTTP layer
    retries each request's transient failures, and an asset that failed is loaded again by
    the next run (the lake does not hold it).
    """
    assets = [asset for asset, _ in batch.value]
    results = AssetResults([ingest_asset(asset, known, run) for asset, known in batch.value])
    failed = [a.path for a, r in zip(assets, results.items, strict=True) if r["status"] == "failed"]
    if failed:
        message = f"{len(failed)} of {len(assets)} asset(s) failed: {', '.join(failed)}"
        return Failed(message=message, data=results)
    return results


def batch_label(assets: Sequence[DandiAsset]) -> str:
    """A task run's name: its asset's path, or the first path and how many more."""
    first = assets[0].path
    return first if len(assets) == 1 else f"{first} (+{len(assets) - 1} more)"


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

    One task run ingests one changed asset, or a few of them (up to 8) in a large run; on
    a Dask cluster, a batch sized from the cluster's threads (up to 32 assets: see
    :func:`spikelab.flows._in_flight.dask_plan`). A task run reads its assets one after the
    other and ends ``Failed`` when one of them failed. Requests to the API are capped at
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
        (32 to 128). The CPU-bound steps of at most one asset per core run at once. On
        Dask, each of the cluster's threads reads one asset at a time, so the cluster's
        threads are the limit too.

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
    where = Lake(lake)
    expire_downloads()
    assets = list_dandi_assets(dandiset, path_glob, api_base)
    if max_assets is not None:
        assets = assets[:max_assets]
    index = known_assets(where, refresh)
    decided: list[Outcome | Pending | None] = []
    # Each changed asset with what the lake knows of it, until its task run is submitted:
    # a large dandiset's listing is let go as the run goes, not held to its end.
    todo: dict[int, tuple[DandiAsset, AssetState | None]] = {}
    for position, asset in enumerate(assets):  # decided without a task run
        if isinstance(asset, RefusedAsset):
            decided.append(refused_outcome(where, dandiset, asset))
        elif asset.is_zarr:
            decided.append(zarr_outcome(where, dandiset, asset))
        else:
            state = index.get(key_of(asset_target(dandiset, asset.asset_id)))
            decided.append(unchanged_outcome(where, state, dandiset, asset))
            if decided[-1] is None:
                todo[position] = (asset, state)
    del index, assets
    changed = list(todo)
    threads = dask_threads()
    if threads is None:
        size, window = batch_size(len(changed), in_flight), in_flight
    else:  # each Dask thread reads one asset at a time
        size, window = dask_plan(len(changed), in_flight, threads)
    run = DandiRun(dandiset, where, raw_zarr, transfer)

    def submit(batch: list[int]) -> PrefectFuture[Any]:
        chosen = [todo.pop(i) for i in batch]
        label = batch_label([asset for asset, _ in chosen])
        return ingest_dandi_assets.submit(Sealed(chosen), run, label)

    batches = (changed[i : i + size] for i in range(0, len(changed), size))
    results = run_in_flight(batches, submit, window)  # each reads one asset at a time
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
    where = Lake(lake)
    ingest = with_task_runner(ingest_dandiset, task_runner, dask_address=dask_address)
    summaries = [
        run_summary(
            ingest(
                entry.id,
                version=entry.version,
                path_glob=entry.path_glob,
                lake=where.root,
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
    compacted = delta_upkeep.compact(where)
    get_run_logger().info("lake compacted: %s", compacted)
    message = f"{len(summaries)} dandisets, {failed} failed assets"
    return run_state(message, summaries, failed=failed > 0)  # type: ignore[return-value]
