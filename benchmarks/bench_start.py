"""Benchmark how long spikelab's commands take to start and finish, against Prefect's floor.

Run ``python benchmarks/bench_start.py [--repeats 3]``.

Every figure is the best of ``--repeats`` wall-clock times of a whole command run in a new
process (``python -m spikelab.cli …``), as a user runs it; all inputs and Prefect homes live
in a scratch folder of the temp directory, removed at the end. Measured:

``demo, no server``
    ``spikelab demo`` with a new ``PREFECT_HOME`` each time and no server running: the
    command starts its temporary server (whose database is created first). Goal <= 20 s.
``demo, local server``
    ``spikelab demo`` into a new lake while ``spikelab server start`` keeps a server
    running. Goal <= 6 s.
``ingest one file, local server``
    ``spikelab ingest files one.nwb`` (the demo's NWB file) into a new lake, same server.
    Goal <= 4 s.
``lake summary`` / ``lake units --region CA1``
    On the demo lake. Goal <= 0.8 s each.

The floor is a bare Prefect flow of three tasks, run the same two ways (a new
``PREFECT_HOME`` and Prefect's own temporary server; then against the running server), and
each spikelab figure is also shown as a ratio to the matching floor. Finally the import
budget: ``python -X importtime`` of a light command's modules and of the flows, with the
heaviest top-level imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from spikelab.demo_data import write_nwb

SPIKELAB = [sys.executable, "-m", "spikelab.cli"]
BARE_FLOW = """\
from prefect import flow, task


@task
def square(value: int) -> int:
    return value * value


@flow
def bare() -> list[int]:
    return [square(value) for value in range(3)]


if __name__ == "__main__":
    bare()
"""
GOALS_S = {
    "demo, no server": 20.0,
    "demo, local server": 6.0,
    "ingest one file, local server": 4.0,
    "lake summary": 0.8,
    "lake units --region CA1": 0.8,
}


def environment(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The process environment: this Prefect home, the given API (or none), no profile."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # as spikelab's CLI sets it: a new home's first start outlasts Prefect's 20 s default
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def timed(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall-clock seconds of one command, which must succeed."""
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")
    print(f"  {elapsed:7.2f} s  {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    return elapsed


def best(repeats: int, run_once: Callable[[int], float]) -> float:
    """The best of ``repeats`` calls of ``run_once(index)``."""
    return min(run_once(index) for index in range(repeats))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def import_budget(code: str) -> tuple[float, list[tuple[float, str]]]:
    """Total import seconds of ``code`` and its six heaviest packages (cumulative each)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True
    )
    total = 0.0
    packages: dict[str, float] = {}
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        seconds, name = int(parts[1]) / 1e6, parts[2]
        if name.startswith(" ") and not name.startswith("  "):
            total += seconds  # a top-level import: its time holds all it imported
        root = name.strip().split(".")[0]
        if root not in ("spikelab", "site", "encodings"):
            packages[root] = max(packages.get(root, 0.0), seconds)
    heaviest = sorted(((s, n) for n, s in packages.items()), reverse=True)[:6]
    return total, heaviest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="spikelab-bench-start-"))
    figures: dict[str, float] = {}
    server_home = scratch / "server-home"
    server_env = environment(server_home)
    try:
        (scratch / "bare.py").write_text(BARE_FLOW)
        one = write_nwb(scratch / "one.nwb", np.random.default_rng(1))
        bare = [sys.executable, str(scratch / "bare.py")]

        figures["demo, no server"] = best(
            args.repeats,
            lambda i: timed(
                [*SPIKELAB, "demo", "--lake", str(scratch / f"fresh-lake-{i}")],
                environment(scratch / f"fresh-home-{i}"),
            ),
        )
        figures["bare flow, no server"] = best(
            args.repeats, lambda i: timed(bare, environment(scratch / f"bare-home-{i}"))
        )

        port = free_port()
        subprocess.run(
            [*SPIKELAB, "server", "start", "--port", str(port)], env=server_env, check=True
        )
        api_env = environment(server_home, f"http://127.0.0.1:{port}/api")
        timed([*SPIKELAB, "demo", "--lake", str(scratch / "warm-lake")], server_env)  # warm-up
        figures["demo, local server"] = best(
            args.repeats,
            lambda i: timed(
                [*SPIKELAB, "demo", "--lake", str(scratch / f"server-lake-{i}")], server_env
            ),
        )
        figures["ingest one file, local server"] = best(
            args.repeats,
            lambda i: timed(
                [*SPIKELAB, "ingest", "files", str(one), "--lake", str(scratch / f"one-{i}")],
                server_env,
            ),
        )
        figures["bare flow, local server"] = best(args.repeats, lambda i: timed(bare, api_env))
        demo_lake = str(scratch / "server-lake-0")
        figures["lake summary"] = best(
            args.repeats,
            lambda i: timed([*SPIKELAB, "lake", "summary", "--lake", demo_lake], dict(os.environ)),
        )
        figures["lake units --region CA1"] = best(
            args.repeats,
            lambda i: timed(
                [*SPIKELAB, "lake", "units", "--region", "CA1", "--lake", demo_lake],
                dict(os.environ),
            ),
        )
    finally:
        subprocess.run([*SPIKELAB, "server", "stop"], env=server_env, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    report(figures)


def report(figures: dict[str, float]) -> None:
    floors = {
        "demo, no server": "bare flow, no server",
        "demo, local server": "bare flow, local server",
        "ingest one file, local server": "bare flow, local server",
    }
    print(f"{'command (best of repeats)':34} {'seconds':>8}  {'goal':>6}  vs bare flow")
    for name, seconds in figures.items():
        goal = GOALS_S.get(name)
        verdict = "" if goal is None else ("ok" if seconds <= goal else "MISSED")
        goal_text = f"<={goal:g}" if goal is not None else ""
        ratio = f"{seconds / figures[floors[name]]:.2f}x" if name in floors else ""
        print(f"{name:34} {seconds:8.2f}  {goal_text:>6}  {ratio:>6} {verdict}")
    print("\nimport budget (python -X importtime, top-level imports):")
    for label, code in (
        ("spikelab lake / --help", "import spikelab.cli, spikelab.lake_queries"),
        ("import spikelab + loaders", "import spikelab, spikelab.loaders"),
        ("spikelab.flows", "import spikelab.flows"),
    ):
        total, heaviest = import_budget(code)
        listed = ", ".join(f"{name} {seconds:.2f} s" for seconds, name in heaviest)
        print(f"  {label:24} {total:5.2f} s  ({listed})")


if __name__ == "__main__":
    main()
