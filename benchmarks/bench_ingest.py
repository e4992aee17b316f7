"""Benchmark ingest throughput of small assets: ``ingest_files`` on tiny NWB files.

Run ``python benchmarks/bench_ingest.py [--files 180] [--units 3] [--spikes 10]``.

Writes ``--files`` tiny NWB files (``--units`` units of ``--spikes`` spikes each, written
with ``export_spikedata_to_nwb``) into a scratch folder of the temp directory (removed at
the end), then, on one Prefect backend (``prefect_test_harness``: a temporary server on
127.0.0.1, ``PREFECT_HOME`` and ``SPIKELAB_CACHE_DIR`` in the scratch folder, logging at
WARNING), times in the same run:

``floor``
    a flow of the same task runner as ``ingest_files`` (4 threads) mapping a no-op task
    over the files: what Prefect alone costs per asset (one task run each);
``first run``
    ``ingest_files`` over the files into an empty lake (load, units table, raster PNG,
    batched Delta commits, manifests). Goal: >= 10 assets/s;
``re-run``
    the same call again: every file is hashed and found unchanged in the assets table
    (one scan), nothing is committed.

Every timed flow run starts once the server is idle (its processes use under 5 % of a
CPU over a second), as in ``bench_pipeline.py``. Then the
per-asset steps are timed outside Prefect on the same files, one after the other in this
process, to show where an asset's time goes: the NWB load (pynwb), the units table (an
Arrow table in memory, as the flow builds it), the raster PNG, the manifest (built and
written), one commit of 16 assets and its journal (per asset). The exit
status is 1 when the throughput goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _harness import isolated_prefect, server_cpu_s, settle_server

SCRATCH = isolated_prefect("spikelab_bench_ingest_")

from prefect import flow, task  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from spikelab.flows import ingest_files  # noqa: E402
from spikelab.io import delta_lake, export_spikedata_to_nwb, storage  # noqa: E402
from spikelab.io.delta_read import history  # noqa: E402
from spikelab.io.lake import Lake  # noqa: E402
from spikelab.io.manifest import build_manifest, put_manifest, spikedata_summary  # noqa: E402
from spikelab.io.publish_journal import write_journal  # noqa: E402
from spikelab.io.raster_plot import raster_png  # noqa: E402
from spikelab.io.units_table import units_arrow_table  # noqa: E402
from spikelab.loaders import load_spikedata_from_nwb  # noqa: E402
from spikelab.spikedata import SpikeData  # noqa: E402

SEED = 20261202
ASSETS_PER_S_GOAL = 10.0
BATCH = 16


@task(name="no-op")
def no_op(path: str) -> str:
    """Nothing: one task run, as the floor of a per-asset task."""
    return path


@flow(name="bench-floor", task_runner=ThreadPoolTaskRunner(max_workers=4))  # type: ignore[arg-type]
def floor_flow(paths: list[str]) -> int:
    """Map the no-op task over ``paths`` and wait for every run."""
    return len([future.result() for future in no_op.map(paths)])


def tiny_files(folder: Path, count: int, units: int, spikes: int) -> list[Path]:
    """``count`` tiny NWB files of ``units`` units of ``spikes`` spikes each."""
    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True)
    paths = []
    with warnings.catch_warnings():  # not meant for DANDI: its readiness warning is noise here
        warnings.simplefilter("ignore")
        for index in range(count):
            trains = [np.sort(rng.uniform(0.0, 1000.0, size=spikes)) for _ in range(units)]
            sd = SpikeData(trains, length=1000.0, metadata={"identifier": f"tiny-{index}"})
            paths.append(export_spikedata_to_nwb(sd, folder / f"tiny-{index:04d}.nwb"))
    return paths


def timed_run(call: object) -> tuple[float, float, object]:
    """Wait for an idle server; then the wall time, server CPU and result of ``call()``."""
    settle_server()
    cpu = server_cpu_s()
    start = time.perf_counter()
    result = call()  # type: ignore[operator]
    return time.perf_counter() - start, server_cpu_s() - cpu, result


def step_times(paths: list[Path], lake: Path) -> dict[str, float]:
    """Mean ms per asset of each step, run outside Prefect, one after the other."""
    per_step = dict.fromkeys(("load", "units table", "raster PNG", "manifest"), 0.0)
    tables, rasters = [], {}
    for index, path in enumerate(paths):
        key = {"source": "files", "dataset_id": "steps", "asset_id": f"a{index}"}
        start = time.perf_counter()
        sd = load_spikedata_from_nwb(path, allow_no_units=True)
        loaded = time.perf_counter()
        tables.append(units_arrow_table(sd, **key))
        tabled = time.perf_counter()
        rasters[("files", "steps", f"a{index}")] = raster_png(sd, title=str(index))
        drawn = time.perf_counter()
        manifest = build_manifest(**key, status="ok", spikedata=spikedata_summary(sd))
        put_manifest(lake / "manifests" / f"a{index}.json", manifest)
        written = time.perf_counter()
        per_step["load"] += loaded - start
        per_step["units table"] += tabled - loaded
        per_step["raster PNG"] += drawn - tabled
        per_step["manifest"] += written - drawn
    steps = {name: 1000.0 * total / len(paths) for name, total in per_step.items()}
    batch = [
        delta_lake.Publication(("files", "steps", f"a{i}"), tables[i], {"status": "ok"})
        for i in range(BATCH)
    ]
    delta_lake.publish(lake, batch[:1])  # creates the tables: not what a commit costs
    start = time.perf_counter()
    delta_lake.publish(lake, batch)
    steps[f"commit of {BATCH} (per asset)"] = 1000.0 * (time.perf_counter() - start) / BATCH
    start = time.perf_counter()
    journal = write_journal(Lake(lake), {key: rasters[key] for key in list(rasters)[:BATCH]})
    storage.remove(journal)
    steps[f"journal of {BATCH} (per asset)"] = 1000.0 * (time.perf_counter() - start) / BATCH
    return steps


def main() -> int:
    """Run the benchmark; print the figures; 1 if the throughput goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=180)
    parser.add_argument("--units", type=int, default=3)
    parser.add_argument("--spikes", type=int, default=10)
    args = parser.parse_args()
    print(f"bench_ingest: {args.files} NWB files of {args.units} units x {args.spikes} spikes")
    print(f"  machine: {os.cpu_count()} CPUs; scratch {SCRATCH}", flush=True)
    try:
        paths = tiny_files(SCRATCH / "inputs", args.files, args.units, args.spikes)
        names = [str(p) for p in paths]
        with prefect_test_harness(server_startup_timeout=120):
            warmup = tiny_files(SCRATCH / "warmup", 2, args.units, args.spikes)
            ingest_files([str(p) for p in warmup], lake=str(SCRATCH / "warmup-lake"))
            floor_flow([str(p) for p in warmup])

            floor_s, floor_cpu, _ = timed_run(lambda: floor_flow(names))
            lake = SCRATCH / "lake"
            first_s, first_cpu, first = timed_run(lambda: ingest_files(names, lake=str(lake)))
            again_s, again_cpu, again = timed_run(lambda: ingest_files(names, lake=str(lake)))
        commits = [h for h in history(lake) if h["operation"] != "CREATE TABLE"]
        steps = step_times(paths, SCRATCH / "steps-lake")
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)

    n = args.files
    rate = n / first_s
    print(
        f"  floor (no-op task per asset): {floor_s:.2f} s, {n / floor_s:.1f} assets/s, "
        f"{1000 * floor_s / n:.1f} ms/asset (server CPU {floor_cpu:.1f} s)"
    )
    print(
        f"  ingest_files, first run: {first_s:.2f} s, {rate:.1f} assets/s, "
        f"{1000 * first_s / n:.1f} ms/asset (server CPU {first_cpu:.1f} s) "
        f"{first['counts']}; {len(commits)} units-table commits"
    )  # type: ignore[index]
    print(
        f"  ingest_files, re-run (all skipped): {again_s:.2f} s, {n / again_s:.1f} assets/s "
        f"(server CPU {again_cpu:.1f} s) {again['counts']}"
    )  # type: ignore[index]
    print(f"  first run / floor: {first_s / floor_s:.2f}x")
    print("  per-asset steps outside Prefect (ms):")
    for name, ms in steps.items():
        print(f"    {name:>24}: {ms:7.2f}")
    met = rate >= ASSETS_PER_S_GOAL and first["counts"]["ok"] == n  # type: ignore[index]
    print(f"  goal >= {ASSETS_PER_S_GOAL:.0f} assets/s: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
