"""The local Prefect server: start/status/stop, stale records, and no server left behind."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from spikelab import server
from spikelab.cli import run
from spikelab.demo_data import write_hdf5

SPIKELAB = [sys.executable, "-m", "spikelab.cli"]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory):
    """One PREFECT_HOME for the tests that start servers: its database is made once."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def prefect_home(tmp_path, monkeypatch):
    """A fresh PREFECT_HOME, no API URL and no profile from the machine."""
    home = tmp_path / "prefect-home"
    monkeypatch.setenv("PREFECT_HOME", str(home))
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(home / "profiles.toml"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return home


def _environment(home: Path) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(home / "p.toml")}
    env.pop("PREFECT_API_URL", None)
    return env


def _processes_with_home(home: Path) -> list[int]:
    """PIDs of every process (ours) whose environment names this PREFECT_HOME."""
    marker = f"PREFECT_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _listening_port(pid: int) -> int | None:
    """The ``--port`` a process was started with, or None if it has none or has already exited."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return int(arguments[arguments.index(b"--port") + 1]) if b"--port" in arguments else None


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            return True
        if state == "Z":  # exited, only waiting to be reaped by its parent
            return True
        time.sleep(0.2)
    return False


def _one_input(tmp_path: Path) -> Path:
    return write_hdf5(tmp_path / "spikes.h5", np.random.default_rng(3))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_an_ingest_leaves_no_server(tmp_path, shared_home):
    home = shared_home
    command = subprocess.Popen(
        [*SPIKELAB, "ingest", "files", str(_one_input(tmp_path)), "--lake", str(tmp_path / "l")],
        env=_environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 150
        servers: dict[int, int] = {}
        while not servers:  # other children (short-lived helpers) share the environment: skip them
            servers = {
                pid: port
                for pid in _processes_with_home(home)
                if pid != command.pid and (port := _listening_port(pid)) is not None
            }
            if time.monotonic() > deadline or command.poll() is not None:
                pytest.fail(f"no temporary server seen; stderr: {command.stderr.read().decode()}")
            time.sleep(0.1)
        ((temporary, port),) = servers.items()
        while not _answers(port) and time.monotonic() < deadline:  # kill it while it serves
            time.sleep(0.2)
        assert _answers(port)
        command.send_signal(signal.SIGKILL)
        command.wait()
    finally:  # a failed check must not leave the command running
        command.kill()
        command.wait()
        command.stderr.close()
    assert _gone(temporary), f"server {temporary} outlived its command"
    assert not _answers(port)
    assert _processes_with_home(home) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_finished_command_leaves_no_server(tmp_path, shared_home):
    home = shared_home
    result = subprocess.run(
        [*SPIKELAB, "ingest", "files", str(_one_input(tmp_path)), "--lake", str(tmp_path / "l")],
        env=_environment(home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "1 loaded, 0 skipped, 0 failed" in result.stdout
    assert result.stderr.count("spikelab server start") == 1  # the hint, once
    assert "Traceback" not in result.stderr and "Error logging" not in result.stderr
    assert _processes_with_home(home) == []


def test_demo_keep_server_then_status_reuse_and_stop(tmp_path, shared_home, monkeypatch, capsys):
    prefect_home = shared_home
    monkeypatch.setenv("PREFECT_HOME", str(prefect_home))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    lake = tmp_path / "lake"
    demo = subprocess.run(
        [*SPIKELAB, "demo", "--keep-server", "--lake", str(lake)],
        env=_environment(prefect_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    record = server.read_record()
    assert record is not None and server.is_our_server(record.pid, record.port)
    assert f"Prefect UI at {record.address}" in demo.stderr
    try:
        assert run(["server", "status"]) == 0
        assert f"running: Prefect server {record.address} (PID {record.pid})" in (
            capsys.readouterr().out
        )
        assert run(["server", "start"]) == 0
        assert "already running" in capsys.readouterr().out
        again = subprocess.run(
            [*SPIKELAB, "ingest", "files", str(_one_input(tmp_path)), "--lake", str(lake)],
            env=_environment(prefect_home),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        assert f"Prefect UI at {record.address}" in again.stderr
        assert "temporary" not in again.stderr
        runs = urllib.request.Request(
            f"{record.api_url}/flow_runs/filter",
            data=b"{}",
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(runs, timeout=10) as answer:
            states = [r["state"]["type"] for r in json.load(answer)]
        assert states.count("COMPLETED") >= 2  # the demo's run and this one, on one server
    finally:
        assert run(["server", "stop"]) == 0
    assert f"stopped the spikelab Prefect server (PID {record.pid}" in capsys.readouterr().out
    assert _gone(record.pid) and not _answers(record.port)
    assert not server.record_path().exists()
    assert run(["server", "status"]) == 1
    assert "no spikelab Prefect server is running" in capsys.readouterr().out


def test_start_on_a_taken_port_is_a_usage_error(prefect_home, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(["server", "start", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert not server.record_path().exists()


@pytest.mark.skipif(os.name == "nt", reason="Windows servers bind without SO_REUSEADDR")
def test_a_port_a_stopped_server_left_in_time_wait_is_free():
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio binds
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server closes first: its port stays in TIME_WAIT
            client.recv(1)
        assert not server.port_is_free(port)  # listening: taken
    assert server.port_is_free(port)  # only TIME_WAIT left: a new server can bind it


@pytest.mark.parametrize("kind", ["dead", "another program"])
def test_status_and_stop_tell_a_stale_record(prefect_home, capsys, kind):
    if kind == "dead":
        finished = subprocess.Popen([sys.executable, "-c", "pass"])
        finished.wait()
        pid = finished.pid
    else:
        pid = os.getpid()  # alive, but not a Prefect server: must never be signalled
    prefect_home.mkdir(parents=True)
    stale = server.ServerRecord(pid=pid, port=4321, started="2026-01-01T00:00:00", log="x")
    server.record_path().write_text(json.dumps(stale.__dict__))
    assert server.server_status() == ("stale", stale)
    assert run(["server", "status"]) == 1
    assert f"stale: {server.record_path()} names PID {pid}" in capsys.readouterr().out
    assert run(["server", "stop"]) == 0
    assert "removed a stale record" in capsys.readouterr().out
    assert not server.record_path().exists()


def test_a_configured_api_url_wins(prefect_home, monkeypatch):
    prefect_home.mkdir(parents=True)
    (prefect_home / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://10.0.0.1:4200/api"\n'
    )
    assert server._profile_api_url() == "http://10.0.0.1:4200/api"
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert server.configured_api_url() == "http://127.0.0.1:9/api"
    with server.flow_backend(say=False) as backend:  # a configured API: nothing started
        assert backend is None
    assert not server.record_path().exists()


def test_two_starts_at_once_cannot_both_record_a_server(prefect_home):
    prefect_home.mkdir(parents=True)
    first = server.ServerRecord(pid=1, port=4201, started="t0", log="a")
    server._write_record(first)
    with pytest.raises(server.PrefectServerError, match="another `spikelab server start`"):
        server._write_record(server.ServerRecord(pid=2, port=4202, started="t1", log="b"))
    assert server.read_record() == first
    assert [p.name for p in prefect_home.iterdir()] == [server.RECORD_NAME]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket closes


@pytest.mark.parametrize("where", ["environment", "profile"])
def test_a_configured_api_nobody_answers_is_a_configuration_error(tmp_path, where):
    url = f"http://127.0.0.1:{_closed_port()}/api"
    home = tmp_path / "prefect-home"
    env = _environment(home)
    if where == "environment":
        env["PREFECT_API_URL"] = url
    else:
        home.mkdir()
        Path(env["PREFECT_PROFILES_PATH"]).write_text(
            f'active = "stale"\n[profiles.stale]\nPREFECT_API_URL = "{url}"\n'
        )
    result = subprocess.run(
        [*SPIKELAB, "ingest", "files", str(_one_input(tmp_path)), "--lake", str(tmp_path / "l")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line, no traceback
    assert f"PREFECT_API_URL={url}" in line and "does not answer" in line
    assert "unset PREFECT_API_URL" in line and "spikelab server start" in line
    assert not (tmp_path / "l").exists()


def test_start_says_why_it_left_port_4200_and_what_to_export(shared_home, monkeypatch, capsys):
    monkeypatch.setenv("PREFECT_HOME", str(shared_home))
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(shared_home / "p.toml"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as usual:  # take 4200 unless something already listens there
        usual.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past a TIME_WAIT
        try:
            usual.bind(("127.0.0.1", server.DEFAULT_PORT))
            usual.listen()
        except OSError:
            pass
        assert not server.port_is_free(server.DEFAULT_PORT)
        start = subprocess.run(
            [*SPIKELAB, "server", "start"],
            env=_environment(shared_home),
            capture_output=True,
            text=True,
            timeout=180,
        )
    try:
        assert start.returncode == 0, start.stderr
        record = server.read_record()
        assert record is not None and record.port != server.DEFAULT_PORT
        assert f"port {server.DEFAULT_PORT} is taken by another" in start.stdout
        assert f"listens on port {record.port}" in start.stdout
        export = f"export PREFECT_API_URL=http://127.0.0.1:{record.port}/api"
        assert start.stdout.splitlines()[-1].strip() == export
        assert run(["server", "status"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].strip() == export
    finally:
        assert run(["server", "stop"]) == 0
