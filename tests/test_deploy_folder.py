"""An operator's day, end to end: deploy from a folder, delete it, run every kind, then serve.

ONE slow test (about 1-2 minutes): a real Prefect server, a process work pool,
`prefect deploy --all` from a temporary folder that is then deleted, a worker that runs one
flow run of each offline-capable deployment (local files; one dandiset and the nightly list
against the DANDI stand-in; an IBL region set against an empty local ONE cache, which must
reach the flow body and fail there), and `spikelab serve` registering beside the deployments
without rewriting them, its own run completing too.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spikelab.demo_data import write_hdf5, write_nwb
from spikelab.deployments import PREFECT_FILE, deployment_specs, served_name
from spikelab.lake_queries import summary_rows
from spikelab.testing import DandiStandIn

BIN = Path(sys.executable).parent
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(env: dict[str, str], path: str, payload: dict[str, Any] | None = None) -> Any:
    """One call to the server's REST API; a 503 (its SQLite database busy) is tried again.

    Prefect's own client retries those; a busy machine, with a worker and `spikelab serve`
    writing to the same database, gives a few.
    """
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}{path}",
        data=None if payload is None else json.dumps(payload).encode(),
        method="GET" if payload is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    for attempt in range(9):
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code != 503:
                raise
            error.close()
            time.sleep(0.2 * (attempt + 1))
    with urllib.request.urlopen(request, timeout=10) as answer:  # the last try raises
        return json.load(answer)


def _deployments(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in _api(env, "/deployments/filter", {})}


def _stop(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM to the process group (a worker may need a second one), then SIGKILL."""
    for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def operator(tmp_path):
    """A Prefect server on a free port, with a temporary PREFECT_HOME, HOME and lake."""
    port = _free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),  # the pull step's working folder for runs
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_PROFILES_PATH": str(tmp_path / "prefect-home" / "profiles.toml"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "SPIKELAB_LAKE": str(tmp_path / "lake"),
        "SPIKELAB_CACHE_DIR": str(tmp_path / "cache"),
    }
    for name in ("PREFECT_API_KEY", "PREFECT_PROFILE"):
        env.pop(name, None)
    server = subprocess.Popen(
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                _api(env, "/health")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("prefect server did not start") from None
                time.sleep(0.5)
        yield env
    finally:
        _stop(server)


def _prefect(env: dict[str, str], *arguments: str, cwd: Path | None = None) -> None:
    result = subprocess.run(
        [BIN / "prefect", "--no-prompt", *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _wait_for_runs(env: dict[str, str], runs: dict[str, str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = {name: _api(env, f"/flow_runs/{run_id}") for name, run_id in runs.items()}
        if all(run["state"]["type"] in TERMINAL for run in found.values()):
            return found
        if time.monotonic() > deadline:
            states = {name: run["state"]["type"] for name, run in found.items()}
            pytest.fail(f"flow runs did not finish within {timeout:.0f} s: {states}")
        time.sleep(1)


def _run_logs(env: dict[str, str], run_id: str) -> str:
    logs = _api(env, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
    return "\n".join(entry["message"] for entry in logs)


# THE slow end-to-end test of this file: real server, deploy, worker and serve (~1-2 min).
@pytest.mark.skipif(os.name == "nt", reason="stops process groups")
def test_deployments_outlive_their_deploy_folder_and_serve_coexists(tmp_path, operator):
    env = operator
    rng = np.random.default_rng(5)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    by_worker = write_hdf5(inputs / "by-worker.h5", rng)
    by_serve = write_hdf5(inputs / "by-serve.h5", rng)
    nwb = write_nwb(inputs / "session.nwb", rng)

    # deploy from a folder, then delete it
    _prefect(env, "work-pool", "create", "spikelab", "--type", "process")
    deploy_folder = tmp_path / "operator-checkout"
    deploy_folder.mkdir()
    _prefect(env, "deploy", "--all", "--prefect-file", str(PREFECT_FILE), cwd=deploy_folder)
    shutil.rmtree(deploy_folder)
    deployed = _deployments(env)
    assert set(deployed) == {spec["name"] for spec in deployment_specs()}
    for deployment in deployed.values():
        assert str(deploy_folder) not in json.dumps(deployment), deployment["name"]
        assert ":" not in deployment["entrypoint"]  # a module path: no code is fetched
    assert deployed["ibl-motor"]["parameters"]["regions"] == ["MOs", "MOp"]
    assert deployed["nightly-dandisets"]["work_pool_name"] == "spikelab"
    assert [s["schedule"]["cron"] for s in deployed["nightly-dandisets"]["schedules"]] == [
        "0 3 * * *"
    ]

    # serve beside them: new names, the deployed ones untouched
    serve = subprocess.Popen(
        [sys.executable, "-m", "spikelab.cli", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    archive = DandiStandIn(tmp_path / "archive")
    try:
        deadline = time.monotonic() + 90
        served = {served_name(name) for name in deployed}
        while not served <= set(_deployments(env)):
            if time.monotonic() > deadline or serve.poll() is not None:
                pytest.fail("spikelab serve registered nothing")
            time.sleep(1)
        after = _deployments(env)
        assert set(after) == set(deployed) | served
        for name, before in deployed.items():
            for field in ("entrypoint", "pull_steps", "path", "work_pool_name", "schedules"):
                assert after[name][field] == before[field], (name, field)
        assert after[served_name("nightly-dandisets")]["schedules"]

        # one run of each kind, all offline
        with archive:
            archive.add_asset("000123", "sub-01/sub-01_ecephys.nwb", nwb)
            nightly = tmp_path / "dandisets.yaml"
            nightly.write_text(
                'dandisets:\n  - id: "000123"\n    version: draft\n    path_glob: "*.nwb"\n'
            )
            empty_one_cache = tmp_path / "one-cache"
            empty_one_cache.mkdir()
            parameters = {
                "manual-files": {"paths": [str(by_worker)]},
                "manual-dandiset": {"dandiset_id": "000123", "api_base": archive.api_base},
                "nightly-dandisets": {"config": str(nightly), "api_base": archive.api_base},
                "ibl-motor": {"one_cache_dir": str(empty_one_cache)},
                served_name("manual-files"): {"paths": [str(by_serve)]},
            }
            runs = {
                name: _api(
                    env,
                    f"/deployments/{after[name]['id']}/create_flow_run",
                    {"parameters": values},
                )["id"]
                for name, values in parameters.items()
            }
            worker = subprocess.Popen(
                [BIN / "prefect", "worker", "start", "--pool", "spikelab", "--run-once"],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                finished = _wait_for_runs(env, runs, timeout=150)
            finally:
                _stop(worker)
    finally:
        _stop(serve)
        serve.stderr.close()

    states = {name: run["state"]["type"] for name, run in finished.items()}
    expected = {name: "COMPLETED" for name in parameters} | {"ibl-motor": "FAILED"}
    assert states == expected, {name: _run_logs(env, runs[name])[-2000:] for name in runs}
    ibl = _run_logs(env, runs["ibl-motor"]) + finished["ibl-motor"]["state"]["message"]
    assert "could not download" in ibl  # in the flow body: offline, no Brain-Wide Map table
    assert "FileNotFoundError" not in ibl
    for run in finished.values():
        assert "Downloading flow code" not in _run_logs(env, run["id"])

    rows = {
        (source, dataset): assets
        for source, dataset, assets, *_ in summary_rows(env["SPIKELAB_LAKE"])
    }
    assert rows[("dandi", "000123")] == 1
    assert sum(n for (source, _), n in rows.items() if source == "files") == 2
    assert not (Path(env["HOME"]) / "spikelab-lake").exists()  # SPIKELAB_LAKE was used
