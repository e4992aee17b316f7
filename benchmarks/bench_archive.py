"""Benchmark the nightly at archive scale: ``spikelab ingest dandi`` over many remote assets.

Run ``python benchmarks/bench_archive.py [--assets 1000] [--units 20] [--latency-ms 100]
[--concurrency N] [--peer-assets N]``; ``--assets 10000`` gives the memory and database
figures at ten times the size.

A ``DandiStandIn`` (API and blob servers on 127.0.0.1, in this process) publishes one
dandiset of ``--assets`` small NWB files (``--units`` units each; 20 distinct files, each
published many times under its own asset and blob ids) and waits ``--latency-ms`` before
every answer, as a wide-area link to the archive would. A kept Prefect server
(``spikelab.server.TemporaryServer``, its own ``PREFECT_HOME`` in a scratch folder) serves
every run. In the same run it times:

``first ingest``
    ``spikelab ingest dandi`` as a command (a child process) into an empty lake: assets/s,
    the command's peak RSS and CPU, the Prefect server's CPU, and the growth of the
    Prefect database (bytes in use, once the server has recorded everything) per asset.
    Goal: >= 25 assets/s;
``re-run``
    the same command again with nothing changed (every asset skipped from the listing);
``lazynwb``
    the peer: ``lazynwb.get_df(blob_urls, "units", exclude_array_columns=False)`` over the
    same assets' blob URLs (``--peer-assets`` of them, default all), in a fresh process.
    Goal: the first ingest >= 5x its assets/s;
``per-asset split``
    the steps of one asset run one after the other outside Prefect on a sample of assets:
    the listing with every asset's record (its time shared out per asset), the streamed
    load (its wall time less its CPU time is network wait, the CPU time is decode), the
    units table, the raster PNG, a commit of 16 assets with their manifests (per asset);
    then the Prefect server's and the command's CPU per asset from the first ingest
    (Prefect's share is the server's).

The first ingest's flow run alone (start to end, as Prefect recorded it) is reported
beside the command, whose start-up (imports, the flow run's creation) costs a few seconds.
With ``BENCH_PROFILE_DIR`` set, each command runs under ``py-spy record`` (collapsed stacks
into that folder). The exit status is 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _harness import in_fresh_process, isolated_prefect, server_cpu_s, settle_server

SCRATCH = isolated_prefect("spikelab_bench_archive_")

from spikelab.ids import DandisetRef  # noqa: E402
from spikelab.io import delta_lake, export_spikedata_to_nwb  # noqa: E402
from spikelab.io.manifest import build_manifest, put_manifest, spikedata_summary  # noqa: E402
from spikelab.io.raster_plot import raster_png  # noqa: E402
from spikelab.io.units_table import units_arrow_table  # noqa: E402
from spikelab.loaders.dandi import DandiAsset, DandiClient, load_spikedata_from_dandi  # noqa: E402
from spikelab.server import TemporaryServer  # noqa: E402
from spikelab.spikedata import SpikeData  # noqa: E402
from spikelab.testing import DandiStandIn  # noqa: E402

SEED = 20261207
DANDISET = "000777"
DISTINCT_FILES = 20
ASSETS_PER_S_GOAL = 25.0
PEER_RATIO_GOAL = 5.0
SAMPLE = 30  # assets timed step by step
BATCH = 16
# Runs the command in a child process and writes its peak RSS and CPU time at exit.
LAUNCHER = """
import atexit, os, resource, sys
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hwm = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    with open(os.environ["BENCH_REPORT"], "w") as out:
        out.write(f"{hwm} {usage.ru_utime + usage.ru_stime}")
atexit.register(report)
from spikelab.cli import main
sys.argv = ["spikelab", *sys.argv[1:]]
main()
"""


def small_files(folder: Path, units: int) -> list[Path]:
    """``DISTINCT_FILES`` small NWB files of ``units`` units (100-300 spikes each)."""
    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True)
    paths = []
    with warnings.catch_warnings():  # not meant for DANDI: its readiness warning is noise
        warnings.simplefilter("ignore")
        for index in range(DISTINCT_FILES):
            length = 600_000.0  # ten minutes, in ms
            trains = [
                np.sort(rng.uniform(0.0, length, size=int(rng.integers(100, 300))))
                for _ in range(units)
            ]
            sd = SpikeData(trains, length=length, metadata={"identifier": f"archive-{index}"})
            paths.append(export_spikedata_to_nwb(sd, folder / f"archive-{index:02d}.nwb"))
    return paths


def publish_assets(dandi: DandiStandIn, files: list[Path], count: int) -> list[str]:
    """Publish ``count`` assets, cycling over ``files``; their ids in path order."""
    contents = [path.read_bytes() for path in files]
    return [
        dandi.add_asset(
            DANDISET,
            f"sub-{index:05d}/sub-{index:05d}_ecephys.nwb",
            contents[index % len(contents)],
        )
        for index in range(count)
    ]


def db_used_bytes(database: Path) -> int:
    """Bytes the Prefect database uses (pages in use, its write-ahead log included)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
        free = connection.execute("PRAGMA freelist_count").fetchone()[0]
        size = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    return int((pages - free) * size)


def run_command(arguments: list[str], report: Path) -> dict[str, float]:
    """Run ``spikelab <arguments>`` in a child process; wall s, peak RSS MB, CPU s, status."""
    environment = {**os.environ, "BENCH_REPORT": str(report)}
    profile = os.environ.get("BENCH_PROFILE_DIR")  # py-spy's collapsed stacks of each command
    prefix = []
    if profile:
        out = Path(profile, f"{report.stem}.txt")
        prefix = ["py-spy", "record", "-f", "raw", "-r", "200", "-o", str(out), "--"]
    start = time.perf_counter()
    done = subprocess.run(
        [*prefix, sys.executable, "-c", LAUNCHER, *arguments],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"  the command ended with status {done.returncode}: {done.stderr[-2000:]}")
    hwm_kb, cpu_s = report.read_text().split()
    return {
        "seconds": seconds,
        "rss_mb": int(hwm_kb) / 1024,
        "cpu_s": float(cpu_s),
        "status": done.returncode,
    }


def last_flow_run_s() -> float:
    """Start to end of the latest ``ingest-dandiset`` flow run (the command less start-up)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["ingest-dandiset"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    if run.start_time is None or run.end_time is None:
        return float("nan")
    return (run.end_time - run.start_time).total_seconds()


def timed_ingest(arguments: list[str], report: Path, database: Path) -> dict[str, float]:
    """One command on an idle server: its figures, the server's CPU and database growth."""
    settle_server()
    before_db, before_cpu = db_used_bytes(database), server_cpu_s()
    result = run_command(arguments, report)
    settle_server()  # the server records the run's events after the command has ended
    result["server_cpu_s"] = server_cpu_s() - before_cpu
    result["db_bytes"] = db_used_bytes(database) - before_db
    result["flow_run_s"] = last_flow_run_s()
    return result


def lazynwb_units(urls: list[str], scratch: str) -> tuple[float, int, int]:
    """The peer, in a fresh process: seconds, rows and spikes of ``lazynwb.get_df``."""
    os.environ["LAZYNWB_CATALOG_CACHE_PATH"] = str(Path(scratch) / "lazynwb-catalog.sqlite")
    import lazynwb

    start = time.perf_counter()
    frame = lazynwb.get_df(
        urls, "units", exclude_array_columns=False, disable_progress=True, as_polars=False
    )
    seconds = time.perf_counter() - start
    return seconds, len(frame), int(sum(len(times) for times in frame["spike_times"]))


def per_asset_split(dandi: DandiStandIn, sample: int, lake: Path) -> dict[str, float]:
    """Mean ms per asset of each step, outside Prefect, one asset after the other.

    The listing (its records included) is timed whole and shared out per asset; then
    ``sample`` assets are read, tabled and drawn one at a time.
    """
    totals = dict.fromkeys(("streamed read (wait)", "decode", "units table", "raster"), 0.0)
    tables, manifests = [], []
    with DandiClient(dandi.api_base) as client:
        start = time.perf_counter()
        listed = list(client.assets(DandisetRef.parse(DANDISET)))
        listing_ms = 1000.0 * (time.perf_counter() - start) / len(listed)
        records = [asset for asset in listed if isinstance(asset, DandiAsset)][:sample]
    asset_ids = [record.asset_id for record in records]
    for record in records:
        start = time.perf_counter()
        cpu = time.thread_time()
        sd = load_spikedata_from_dandi(record, stream=True, allow_no_units=True)
        loaded, cpu = time.perf_counter(), time.thread_time() - cpu
        key = {"source": "dandi", "dataset_id": DANDISET, "asset_id": record.asset_id}
        tables.append(units_arrow_table(sd, **key))
        tabled = time.perf_counter()
        raster_png(sd, title=record.asset_id)
        drawn = time.perf_counter()
        manifests.append(build_manifest(**key, status="ok", spikedata=spikedata_summary(sd)))
        totals["streamed read (wait)"] += loaded - start - cpu
        totals["decode"] += cpu
        totals["units table"] += tabled - loaded
        totals["raster"] += drawn - tabled
    steps = {"listing with records": listing_ms}
    steps.update((name, 1000.0 * total / len(records)) for name, total in totals.items())
    batch = [
        delta_lake.Publication(("dandi", DANDISET, asset_ids[i]), tables[i], manifests[i])
        for i in range(BATCH)
    ]
    delta_lake.publish(lake, batch[:1])  # creates the tables: not what a commit costs
    start = time.perf_counter()
    delta_lake.publish(lake, batch)
    for index, manifest in enumerate(manifests[:BATCH]):
        put_manifest(lake / "manifests" / f"{index}.json", manifest)
    steps[f"publish ({BATCH} a commit)"] = 1000.0 * (time.perf_counter() - start) / BATCH
    return steps


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=1000, help="assets in the dandiset")
    parser.add_argument("--units", type=int, default=20, help="units per asset")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="before every answer")
    parser.add_argument("--concurrency", type=int, help="passed to the command (--concurrency)")
    parser.add_argument("--peer-assets", type=int, help="assets lazynwb reads (default all)")
    args = parser.parse_args()
    if args.assets < BATCH or args.units < 1 or args.latency_ms < 0:
        parser.error(f"need --assets >= {BATCH}, --units >= 1, --latency-ms >= 0")
    return args


def report(args: argparse.Namespace, figures: dict[str, Any]) -> bool:
    """Print the figures; whether the goals were met."""
    n = args.assets
    first, again = figures["first"], figures["again"]
    rate = n / first["seconds"]
    peer_n, (peer_s, peer_rows, peer_spikes) = figures["peer_assets"], figures["peer"]
    peer_rate = peer_n / peer_s
    ratio = rate / peer_rate
    print(
        f"  first ingest: {first['seconds']:.1f} s, {rate:.1f} assets/s; counts "
        f"{figures['counts']}; status {first['status']:.0f}"
    )
    print(
        f"    of which the flow run: {first['flow_run_s']:.1f} s, "
        f"{n / first['flow_run_s']:.1f} assets/s (the rest: the command's start-up and exit)"
    )
    print(
        f"    command peak RSS {first['rss_mb']:.0f} MB, CPU {first['cpu_s']:.1f} s; Prefect "
        f"server CPU {first['server_cpu_s']:.1f} s"
    )
    print(
        f"    Prefect database: +{first['db_bytes'] / 1e6:.1f} MB, "
        f"{first['db_bytes'] / n / 1024:.1f} KB per asset"
    )
    print(
        f"  re-run, nothing changed: {again['seconds']:.1f} s (flow run "
        f"{again['flow_run_s']:.1f} s), peak RSS {again['rss_mb']:.0f} MB, Prefect database "
        f"+{again['db_bytes'] / 1024:.0f} KB"
    )
    print(
        f"  lazynwb.get_df over {peer_n} blob URLs: {peer_s:.1f} s, {peer_rate:.1f} assets/s "
        f"({peer_rows} rows, {peer_spikes} spikes)"
    )
    print(
        f"  first ingest / lazynwb: {ratio:.1f}x (assets/s; the flow run alone "
        f"{n / first['flow_run_s'] / peer_rate:.1f}x)"
    )
    print(f"  per-asset split (ms), one asset at a time outside Prefect, {SAMPLE} assets:")
    for name, ms in figures["split"].items():
        print(f"    {name:>28}: {ms:7.2f}")
    print(f"    {'flow command CPU (in run)':>28}: {1000 * first['cpu_s'] / n:7.2f}")
    print(f"    {'Prefect server CPU (in run)':>28}: {1000 * first['server_cpu_s'] / n:7.2f}")
    met_rate = rate >= ASSETS_PER_S_GOAL and figures["counts"]["ok"] == n
    met_peer = ratio >= PEER_RATIO_GOAL
    print(
        f"  goal >= {ASSETS_PER_S_GOAL:.0f} assets/s: {'met' if met_rate else 'MISSED'}; "
        f"goal >= {PEER_RATIO_GOAL:.0f}x lazynwb: {'met' if met_peer else 'MISSED'}"
    )
    return met_rate and met_peer


def main() -> int:
    """Publish the dandiset, run each measurement, report."""
    import json

    args = parse_args()
    print(
        f"bench_archive: {args.assets} assets of {args.units} units, {args.latency_ms:g} ms "
        f"before every answer; {os.cpu_count()} CPUs; scratch {SCRATCH}",
        flush=True,
    )
    figures: dict[str, Any] = {}
    server = TemporaryServer()
    try:
        files = small_files(SCRATCH / "files", args.units)
        with DandiStandIn(SCRATCH / "archive") as dandi:
            asset_ids = publish_assets(dandi, files, args.assets)
            with DandiClient(dandi.api_base) as client:  # at loopback speed
                urls = [str(client.describe(a).blob_url) for a in asset_ids]
            server.wait_ready()
            os.environ["PREFECT_API_URL"] = server.api_url
            database = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
            dandi.latency_seconds = args.latency_ms / 1000.0
            lake = SCRATCH / "lake"
            command = ["ingest", "dandi", DANDISET, "--api-base", dandi.api_base]
            command += ["--lake", str(lake)]
            if args.concurrency:
                command += ["--concurrency", str(args.concurrency)]
            warmup = [*command[:5], "--lake", str(SCRATCH / "warmup-lake"), "--max-assets", "2"]
            run_command(warmup, SCRATCH / "warmup.report")  # the flow is registered
            figures["first"] = timed_ingest(command, SCRATCH / "first.report", database)
            summary = json.loads(next((lake / "runs").glob("*.json")).read_text())
            figures["counts"] = summary["counts"]
            figures["again"] = timed_ingest(command, SCRATCH / "again.report", database)
            peer_n = min(args.peer_assets or args.assets, args.assets)
            figures["peer_assets"] = peer_n
            figures["peer"] = in_fresh_process(lazynwb_units, urls[:peer_n], str(SCRATCH))
            figures["split"] = per_asset_split(dandi, max(SAMPLE, BATCH), SCRATCH / "split-lake")
    finally:
        server.stop()
        shutil.rmtree(SCRATCH, ignore_errors=True)
    return 0 if report(args, figures) else 1


if __name__ == "__main__":
    sys.exit(main())
