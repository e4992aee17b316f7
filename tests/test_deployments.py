"""deployments/prefect.yaml: every entrypoint imports as a real flow, and `prefect deploy` works."""

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from prefect.flows import Flow, load_flow_from_entrypoint

from spikelab.config import CONFIG_DIR, IblRegionsConfig, load_config
from spikelab.deployments import PREFECT_FILE, deployment_specs

ROOT = Path(__file__).parents[1]


def test_every_entrypoint_is_a_real_flow_with_valid_parameters():
    specs = deployment_specs()
    assert {spec["name"] for spec in specs} >= {"nightly-dandisets", "manual-dandiset"}
    for spec in specs:
        flow = load_flow_from_entrypoint(spec["entrypoint"], use_placeholder_flow=False)
        assert isinstance(flow, Flow), spec["name"]
        accepted = inspect.signature(flow.fn).parameters
        assert set(spec.get("parameters") or {}) <= set(accepted), spec["name"]


def test_nightly_deployment_is_scheduled():
    nightly = next(s for s in deployment_specs() if s["name"] == "nightly-dandisets")
    assert nightly["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC"}]


def test_one_ibl_deployment_per_region_set():
    region_sets = load_config(CONFIG_DIR / "ibl_regions.yaml", IblRegionsConfig).region_sets
    deployed = {
        spec["name"].removeprefix("ibl-"): spec["parameters"]
        for spec in deployment_specs()
        if spec["entrypoint"].endswith(":ingest_ibl_region")
    }
    assert set(deployed) == set(region_sets)
    for name, region_set in region_sets.items():
        assert deployed[name] == region_set.model_dump(exclude_none=True), name


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on 127.0.0.1, stopped by its process group."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    env.pop("PREFECT_API_KEY", None)
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("prefect server did not start") from None
                time.sleep(0.5)
        yield prefect, env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_prefect_deploy_registers_every_deployment(prefect_server):
    prefect, env = prefect_server
    subprocess.run(
        [prefect, "work-pool", "create", "spikelab", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
    )
    result = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(PREFECT_FILE)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}/deployments/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        registered = {d["name"]: d for d in json.load(response)}
    expected = yaml.safe_load(PREFECT_FILE.read_text())["deployments"]
    assert set(registered) == {spec["name"] for spec in expected}
    assert registered["ibl-motor"]["parameters"]["regions"] == ["MOs", "MOp"]
    assert registered["nightly-dandisets"]["work_pool_name"] == "spikelab"


def test_serve_builds_the_same_deployments(monkeypatch):
    import prefect

    from spikelab.deployments import serve_all

    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    serve_all()
    by_name = {deployment.name: deployment for deployment in served}
    assert set(by_name) == {spec["name"] for spec in deployment_specs()}
    nightly = by_name["nightly-dandisets"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 3 * * *"]
    assert by_name["ibl-visual"].parameters["regions"] == ["VISp", "VISl", "VISam"]
    assert by_name["manual-files"].schedules == []


def test_deployments_take_the_lake_from_spikelab_lake():
    assert all("lake" not in (spec.get("parameters") or {}) for spec in deployment_specs())
    assert "SPIKELAB_LAKE" in PREFECT_FILE.read_text()


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("/data/lake", True), ("s3://bucket/lake", True), ("relative/lake", False), (None, True)],
)
def test_serve_refuses_a_relative_spikelab_lake(monkeypatch, value, accepted, capsys):
    import prefect

    from spikelab.cli import run
    from spikelab.deployments import check_lake_variable

    if value is None:
        monkeypatch.delenv("SPIKELAB_LAKE", raising=False)
    else:
        monkeypatch.setenv("SPIKELAB_LAKE", value)
    served = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments: served.extend(deployments))
    if accepted:
        assert check_lake_variable() == value
        return
    assert run(["serve"]) == 2
    assert "SPIKELAB_LAKE=relative/lake is a relative folder" in capsys.readouterr().err
    assert served == []
