"""Benchmark the DANDI ingest on Dask: 2 worker processes against 1, into one S3 lake.

Run ``python benchmarks/bench_dask.py [--assets 300] [--units 20] [--latency-ms 100]
[--threads 4] [--concurrency N] [--rounds 1]``.

A ``DandiStandIn`` (in this process) publishes one dandiset of ``--assets`` small NWB
files (bench_archive's files) and waits ``--latency-ms`` before every answer; moto's S3
application (alone, see ``MOTO_S3``) runs in a process of its own and holds the lake; a
kept Prefect server serves every run. For each cluster, in the same run, a Dask scheduler
and its workers are started with Dask's own commands (``dask scheduler``, ``dask worker
--nworkers K --nthreads T``, every worker process with the same ``--threads``), their
imports are warmed, and then ``spikelab ingest dandi ID --task-runner dask --dask-address
... --lake s3://...`` ingests the whole dandiset into an empty lake, as a user would:

``1 worker``
    the peer: one worker process;
``2 workers``
    two worker processes. Goal: >= 1.6x the assets/s of one.

Assets/s are taken over the flow run (start to end as Prefect recorded it: the command's
start-up, the same for both, is left out; the command's own figure is printed beside).
Each lake is then counted: every published asset once in the assets table, its units
once each in the units table (raw rows, superseded ones included), nothing else. With
``--rounds N`` the clusters alternate N times and each keeps its best round. Beside each
run, the CPU seconds of the worker processes, the command, the Prefect server, moto, the
Dask scheduler and this process (the stand-in) show which of them could be the
bottleneck; per asset, they give the ceiling of two cores (2 / CPU seconds per asset, the
command's start-up included). With ``BENCH_PROFILE_DIR`` set, each timed command runs
under ``py-spy record`` (bench_archive's ``run_command``), and every worker process, moto,
the Prefect server and the scheduler are recorded too during the timed run
(``<label>-worker-<i>.txt``, ``<label>-moto.txt`` ...). The exit status is 1 when a goal
is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import bench_archive as archive  # sets up a scratch Prefect home for the benchmark

from spikelab.io.delta_read import open_assets, open_units
from spikelab.server import TemporaryServer, free_port
from spikelab.testing import DandiStandIn

SCRATCH = archive.SCRATCH
BUCKET = "bench-dask"
RATIO_GOAL = 1.6
# moto's S3 application served alone: ``python -m moto.server`` puts a dispatcher in front
# that looks up every request's service (listing moto's package folder each time), about a
# third of moto's CPU per PUT, which no object store costs the machine the lake runs on.
MOTO_S3 = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import MotoRequestHandler, create_backend_app
app = create_backend_app("s3")
run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True, request_handler=MotoRequestHandler)
"""
# What a worker imports at its first task: imported up front so no timed run pays for it.
WARM_IMPORTS = ("spikelab.flows.dandi", "spikelab.loaders.nwb", "pynwb", "h5py", "deltalake")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 application in its own process; it and its endpoint URL, once it answers."""
    import urllib.request

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", MOTO_S3, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{endpoint}/", timeout=1):  # S3's ListBuckets
                return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"moto's server did not answer on {endpoint} within a minute")


def aws_environment(endpoint: str) -> None:
    """Fake credentials and moto's endpoint, for this process and every one it starts."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_EC2_METADATA_DISABLED="true",
    )


def warm_imports() -> float:
    """Import what a task run needs (run on each worker); the seconds it took."""
    import importlib

    start = time.perf_counter()
    for name in WARM_IMPORTS:
        importlib.import_module(name)
    return time.perf_counter() - start


class Cluster:
    """A Dask scheduler and ``workers`` worker processes, started with Dask's commands."""

    def __init__(self, workers: int, threads: int) -> None:
        from distributed import Client

        self.workers = workers
        scheduler_file = SCRATCH / f"scheduler-{workers}.json"
        scheduler_file.unlink(missing_ok=True)
        common = ["--scheduler-file", str(scheduler_file)]
        self.processes = [
            subprocess.Popen(
                [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", *common]
                + ["--port", "0", "--dashboard-address", ":0"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        ]
        while not scheduler_file.exists():
            time.sleep(0.1)
        self.processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", "--host", "127.0.0.1", *common]
                + ["--nworkers", str(workers), "--nthreads", str(threads), "--no-dashboard"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        self.client = Client(scheduler_file=str(scheduler_file))
        self.client.wait_for_workers(workers, timeout=300)
        self.address = self.client.scheduler.address
        self.client.run(warm_imports)

    def cpu_s(self) -> float:
        """CPU seconds the worker processes have used so far."""
        return sum(self.client.run(_own_cpu_s).values())

    def pids(self) -> list[int]:
        """The worker processes' ids."""
        return sorted(self.client.run(os.getpid).values())

    def scheduler_pid(self) -> int:
        """The scheduler process's id."""
        return self.processes[0].pid

    def close(self) -> None:
        """Stop the workers and the scheduler."""
        self.client.close()
        for process in reversed(self.processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _own_cpu_s() -> float:
    """This process's CPU seconds (its children's left out)."""
    usage = os.times()
    return usage.user + usage.system


def process_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` and its children have used so far."""
    import psutil

    process = psutil.Process(pid)
    times = [p.cpu_times() for p in [process, *process.children(recursive=True)]]
    return sum(t.user + t.system for t in times)


def profile(pids: dict[str, int], label: str) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on each process of ``pids`` (name -> id) with ``BENCH_PROFILE_DIR``."""
    folder = os.environ.get("BENCH_PROFILE_DIR")
    if not folder:
        return []
    return [
        subprocess.Popen(
            ["py-spy", "record", "-f", "raw", "-r", "100", "--subprocesses", "-p", str(pid)]
            + ["-o", os.path.join(folder, f"{label}-{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def lake_counts(lake: str, published: dict[str, int]) -> dict[str, int]:
    """Assets and units rows of ``lake`` against ``published`` (asset id -> units)."""
    units_table, assets_table = open_units(lake), open_assets(lake, None)
    if units_table is None or assets_table is None:  # the run published nothing
        return {"assets rows": 0, "assets missing": len(published), "units rows": 0}
    units = units_table.to_pyarrow_table(columns=["asset_id", "unit_index"]).to_pydict()
    assets = assets_table.to_pyarrow_table(columns=["asset_id", "status"])
    rows = list(zip(units["asset_id"], units["unit_index"], strict=True))
    ids = Counter(assets.column("asset_id").to_pylist())
    per_asset = Counter(units["asset_id"])
    return {
        "assets rows": assets.num_rows,
        "assets not ok": sum(status != "ok" for status in assets.column("status").to_pylist()),
        "assets missing": sum(1 for a in published if ids[a] == 0),
        "assets doubled": sum(1 for count in ids.values() if count > 1),
        "assets unknown": sum(1 for a in ids if a not in published),
        "units rows": len(rows),
        "units doubled": len(rows) - len(set(rows)),
        "assets with wrong units": sum(1 for a, n in published.items() if per_asset[a] != n),
    }


def counts_right(counts: dict[str, int], published: dict[str, int]) -> bool:
    """Whether the lake holds each published asset and unit exactly once."""
    wrong = {k: v for k, v in counts.items() if k not in ("assets rows", "units rows") and v}
    return (
        not wrong
        and counts["assets rows"] == len(published)
        and counts["units rows"] == sum(published.values())
    )


def settle(server: TemporaryServer) -> None:
    """Wait until the Prefect server has worked off its backlog (under 5% of a CPU for 1 s).

    Not ``_harness.settle_server``: it counts every child process, the Dask ones too.
    """
    import psutil

    process = psutil.Process(server.process.pid)

    def cpu_s() -> float:
        times = [p.cpu_times() for p in [process, *process.children(recursive=True)]]
        return sum(t.user + t.system for t in times)

    before, deadline = cpu_s(), time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = cpu_s()
        if after - before < 0.05:
            return
        before = after


def timed_run(
    server: TemporaryServer,
    moto: subprocess.Popen[bytes],
    cluster: Cluster,
    command: list[str],
    lake: str,
    label: str,
    published: dict[str, int],
) -> dict[str, Any]:
    """One ``spikelab ingest dandi`` on ``cluster`` into the empty ``lake``: its figures."""
    settle(server)
    pids = {"server": server.process.pid, "moto": moto.pid, "scheduler": cluster.scheduler_pid()}
    others: dict[str, Callable[[], float]] = {
        name: partial(process_cpu_s, pid) for name, pid in pids.items()
    }
    others["stand-in"] = _own_cpu_s  # this process alone
    cpu, before = cluster.cpu_s(), {name: cpu_s() for name, cpu_s in others.items()}
    workers = {f"worker-{i}": pid for i, pid in enumerate(cluster.pids())}
    profilers = profile({**workers, **pids}, label)
    arguments = [*command, "--lake", lake, "--dask-address", cluster.address]
    result: dict[str, Any] = archive.run_command(arguments, SCRATCH / f"{label}.report")
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its file and stops
        profiler.wait()
    result["worker_cpu_s"] = cluster.cpu_s() - cpu
    result["other_cpu_s"] = {name: cpu_s() - before[name] for name, cpu_s in others.items()}
    result["flow_run_s"] = archive.last_flow_run_s()
    result["load"] = os.getloadavg()[0]
    result["counts"] = lake_counts(lake, published)
    return result


def stopped(signum: int, frame: Any) -> None:
    """Leave through the ``finally`` blocks (the clusters, moto, the scratch folder go)."""
    sys.exit(f"bench_dask: stopped by signal {signum}")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=int, default=300, help="assets in the dandiset")
    parser.add_argument("--units", type=int, default=20, help="units per asset")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="before every answer")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker process")
    parser.add_argument("--concurrency", type=int, help="passed to the command (--concurrency)")
    parser.add_argument("--rounds", type=int, default=1, help="times each cluster runs")
    args = parser.parse_args()
    if min(args.assets, args.units, args.threads, args.rounds) < 1 or args.latency_ms < 0:
        parser.error("need --assets, --units, --threads, --rounds >= 1, --latency-ms >= 0")
    return args


def cpu_per_asset(result: dict[str, Any], assets: int) -> str:
    """Each process's CPU milliseconds per asset, and the assets/s two cores allow at most."""
    spent = {"workers": result["worker_cpu_s"], "command": result["cpu_s"]}
    spent.update(result["other_cpu_s"])
    total = sum(spent.values())
    parts = ", ".join(f"{name} {1000 * s / assets:.0f}" for name, s in spent.items())
    return (
        f"CPU ms per asset: {parts}; all {1000 * total / assets:.0f}: two cores allow at most "
        f"{2 * assets / total:.1f} assets/s"
    )


def report(args: argparse.Namespace, runs: dict[int, list[dict[str, Any]]]) -> bool:
    """Print every run and the best of each cluster; whether the goals were met."""
    n = args.assets
    best = {}
    for workers, results in runs.items():
        for result in results:
            rate = n / result["flow_run_s"]
            print(
                f"  {workers} worker(s): flow run {result['flow_run_s']:.1f} s, {rate:.1f} "
                f"assets/s (command {result['seconds']:.1f} s, {n / result['seconds']:.1f} "
                f"assets/s); CPU: workers {result['worker_cpu_s']:.1f} s, command "
                f"{result['cpu_s']:.1f} s, "
                + ", ".join(f"{k} {v:.1f} s" for k, v in result["other_cpu_s"].items())
                + f"; status {result['status']}; load {result['load']:.1f}"
            )
            print(f"    lake: {result['counts']}")
            print(f"    {cpu_per_asset(result, n)}")
        best[workers] = max(results, key=lambda result: n / result["flow_run_s"])
    ratio = best[1]["flow_run_s"] / best[2]["flow_run_s"]
    command_ratio = best[1]["seconds"] / best[2]["seconds"]
    print(
        f"  2 workers / 1 worker: {ratio:.2f}x (assets/s over the flow run; the command "
        f"{command_ratio:.2f}x)"
    )
    whole = all(
        result["status"] == 0 and result["right"] for results in runs.values() for result in results
    )
    met_ratio = ratio >= RATIO_GOAL
    print(
        f"  goal >= {RATIO_GOAL}x: {'met' if met_ratio else 'MISSED'}; every asset and unit "
        f"once in every lake: {'yes' if whole else 'NO'}"
    )
    return met_ratio and whole


def main() -> int:
    """Publish the dandiset, time each cluster, count the lakes, report."""
    args = parse_args()
    signal.signal(signal.SIGTERM, stopped)  # clean up when stopped
    print(
        f"bench_dask: {args.assets} assets of {args.units} units, {args.latency_ms:g} ms "
        f"before every answer, {args.threads} threads per worker; {os.cpu_count()} CPUs; "
        f"load {os.getloadavg()[0]:.1f}; scratch {SCRATCH}",
        flush=True,
    )
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    server = TemporaryServer()
    moto, endpoint = start_moto()
    try:
        aws_environment(endpoint)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        files = archive.small_files(SCRATCH / "files", args.units)
        with DandiStandIn(SCRATCH / "archive") as dandi:
            ids = archive.publish_assets(dandi, files, args.assets)
            published = dict.fromkeys(ids, args.units)
            server.wait_ready()
            os.environ["PREFECT_API_URL"] = server.api_url
            dandi.latency_seconds = args.latency_ms / 1000.0
            command = ["ingest", "dandi", archive.DANDISET, "--api-base", dandi.api_base]
            command += ["--task-runner", "dask"]
            if args.concurrency:
                command += ["--concurrency", str(args.concurrency)]
            for round_ in range(args.rounds):
                for workers in (1, 2):
                    cluster = Cluster(workers, args.threads)
                    try:
                        warmup = [*command, "--max-assets", str(2 * workers * args.threads)]
                        lake = f"s3://{BUCKET}/warmup-{workers}-{round_}"
                        archive.run_command(
                            [*warmup, "--lake", lake, "--dask-address", cluster.address],
                            SCRATCH / "warmup.report",
                        )
                        lake = f"s3://{BUCKET}/lake-{workers}-{round_}"
                        label = f"workers-{workers}-{round_}"
                        result = timed_run(server, moto, cluster, command, lake, label, published)
                    finally:
                        cluster.close()
                    result["right"] = counts_right(result["counts"], published)
                    runs[workers].append(result)
                    print(
                        f"  round {round_ + 1}, {workers} worker(s): "
                        f"{args.assets / result['flow_run_s']:.1f} assets/s",
                        flush=True,
                    )
    finally:
        server.stop()
        moto.terminate()
        moto.wait()
        shutil.rmtree(SCRATCH, ignore_errors=True)
    return 0 if report(args, runs) else 1


if __name__ == "__main__":
    sys.exit(main())
