"""The Prefect server spikelab's commands run their flows against.

Two kinds, both Prefect's own API app served by uvicorn on 127.0.0.1:

- a **persistent** server, started on purpose with ``spikelab server start`` and stopped with
  ``spikelab server stop``; its PID, port and log are recorded in
  ``$PREFECT_HOME/spikelab-server.json``, so ``stop`` only ever signals the process spikelab
  started, and ``status`` tells a live server from a stale record;
- a **temporary** server, started by one command when no other server is configured. It
  runs in a small wrapper that dies with the command, even after ``kill -9`` (Linux's
  parent-death signal, and on every platform a watchdog thread that sees the parent go).

Nothing here imports Prefect: the server starts while the command imports its flows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Literal

from spikelab.exceptions import PrefectServerError, ServerPortInUseError

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
RECORD_NAME = "spikelab-server.json"
LOG_NAME = "spikelab-server.log"
APP = "prefect.server.api.server:create_app"
DEFAULT_STARTUP_TIMEOUT_S = 120.0
FASTER_RUNS_HINT = (
    "spikelab: starting a temporary Prefect server for this command; "
    "`spikelab server start` keeps one running and makes the next runs faster"
)
Status = Literal["running", "not responding", "stale", "stopped"]

# The temporary server's wrapper: it asks Linux to kill it when its parent dies, watches its
# parent on every platform, then runs uvicorn in the same process (one process to stop).
_DIE_WITH_PARENT = """\
import ctypes, os, runpy, sys, threading, time
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
if os.getppid() != parent:
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
sys.argv = ["uvicorn", *sys.argv[2:]]
runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True)
class ServerRecord:
    """What ``spikelab server start`` recorded about the server it started."""

    pid: int
    port: int
    started: str
    log: str

    @property
    def address(self) -> str:
        """The server's root URL, where the Prefect UI is served."""
        return f"http://{HOST}:{self.port}"

    @property
    def api_url(self) -> str:
        """The value of ``PREFECT_API_URL`` that reaches this server."""
        return f"{self.address}/api"


def prefect_home() -> Path:
    """Prefect's home folder: ``PREFECT_HOME``, else ``~/.prefect``."""
    return Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()


def record_path() -> Path:
    """Where the persistent server's record lives."""
    return prefect_home() / RECORD_NAME


def configured_api_url() -> str | None:
    """The Prefect API the user configured, if any.

    Looks at ``PREFECT_API_URL`` in the environment, then (without importing Prefect) at the
    active profile of Prefect's profiles file, and, when Prefect is already imported, at its
    current settings.
    """
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url
    return _profile_api_url()


def _profile_api_url() -> str | None:
    location = os.environ.get("PREFECT_PROFILES_PATH") or str(prefect_home() / "profiles.toml")
    location = location.replace("$PREFECT_HOME", str(prefect_home()))
    try:
        profiles = tomllib.loads(Path(location).expanduser().read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")
    return str(url) if url else None


def healthy(api_url: str, timeout: float = 5.0) -> bool:
    """Whether a Prefect API answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def reachable(api_url: str, timeout: float = 5.0) -> bool:
    """Whether anything answers HTTP at ``api_url`` (an error status counts as an answer).

    A refused connection, an unknown host or a timeout is unreachable; a server that
    answers the health check with 401 (one that wants a key) is reached.
    """
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``127.0.0.1:port``.

    The test binds as the server will: asyncio's servers set ``SO_REUSEADDR`` on Unix, so
    there a port whose last server has stopped, with connections still in TIME_WAIT, counts
    as free. (On Windows that option would let a bind steal a listening port.)
    """
    with socket.socket() as sock:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_our_server(pid: int, port: int) -> bool:
    """Whether process ``pid`` is alive and is a Prefect server on ``port``.

    On Linux its command line must name Prefect's app and the port, so a PID the system
    gave to another program since is never taken for the server.
    """
    if not _pid_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return sys.platform != "linux"
    arguments = cmdline.read_bytes().split(b"\0")
    return APP.encode() in arguments and str(port).encode() in arguments


def read_record() -> ServerRecord | None:
    """The persistent server's record, or None when there is none (or it is unreadable)."""
    try:
        content = json.loads(record_path().read_text())
        return ServerRecord(**content)
    except (OSError, ValueError, TypeError):
        return None


def server_status() -> tuple[Status, ServerRecord | None]:
    """How the persistent server is: running, alive but not answering, stale or stopped."""
    record = read_record()
    if record is None:
        return "stopped", None
    if not is_our_server(record.pid, record.port):
        return "stale", record
    return ("running" if healthy(record.api_url) else "not responding"), record


def running_server() -> ServerRecord | None:
    """The persistent server's record when it is up and answering."""
    status, record = server_status()
    return record if status == "running" else None


def _uvicorn_arguments(port: int) -> list[str]:
    spec = find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise PrefectServerError("Prefect is not installed: pip install prefect")
    app_dir = str(Path(next(iter(spec.submodule_search_locations))).parent)
    return [
        "--app-dir",
        app_dir,
        "--factory",
        APP,
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def _server_environment(*, temporary: bool) -> dict[str, str]:
    environment = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT__SERVER_FINAL": "1",
    }
    environment.pop("PREFECT_API_URL", None)
    if temporary:  # what Prefect's own temporary server sets: no UI, fewer services
        environment |= {"PREFECT_SERVER_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1"}
    return environment


def _startup_timeout() -> float:
    value = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    try:
        return float(value) if value else DEFAULT_STARTUP_TIMEOUT_S
    except ValueError:
        return DEFAULT_STARTUP_TIMEOUT_S


def _tail(stream: IO[bytes] | Path, limit: int = 2000) -> str:
    data = stream.read_bytes() if isinstance(stream, Path) else (stream.seek(0), stream.read())[1]
    return data[-limit:].decode(errors="replace").strip()


def wait_until_healthy(
    process: subprocess.Popen[bytes], api_url: str, timeout: float, log: IO[bytes] | Path
) -> None:
    """Wait for the server in ``process`` to answer at ``api_url``.

    Raises
    ------
    PrefectServerError
        The process exited, or did not answer within ``timeout`` seconds; the message
        carries the end of its log.
    """
    deadline = time.monotonic() + timeout
    while not healthy(api_url, timeout=1.0):
        if process.poll() is not None:
            raise PrefectServerError(
                f"the Prefect server on {api_url} exited with status {process.returncode} "
                f"before it answered; its log ends with:\n{_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise PrefectServerError(
                f"the Prefect server on {api_url} did not answer within {timeout:.0f} s "
                "(raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS on a slow machine); "
                f"its log ends with:\n{_tail(log)}"
            )
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a server process: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class TemporaryServer:
    """A Prefect server for one command, which dies with the process that started it.

    Creating it starts the server and returns at once; :meth:`wait_ready` blocks until it
    answers, :meth:`stop` stops it (also used as a context manager).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._log = tempfile.TemporaryFile(prefix="spikelab-prefect-server-")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DIE_WITH_PARENT,
                str(os.getpid()),
                *_uvicorn_arguments(self.port),
            ],
            env=_server_environment(temporary=True),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches the command only
        )

    @property
    def api_url(self) -> str:
        """The value of ``PREFECT_API_URL`` that reaches this server."""
        return f"http://{HOST}:{self.port}/api"

    def wait_ready(self) -> None:
        """Block until the server answers (see :func:`wait_until_healthy`)."""
        wait_until_healthy(self.process, self.api_url, _startup_timeout(), self._log)

    def stop(self) -> None:
        """Stop the server and close its log."""
        stop_process(self.process)
        self._log.close()

    def __enter__(self) -> TemporaryServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ServerStart:
    """What :func:`start_server` did.

    The server's record, whether this call started it, and why the server does not listen
    on port 4200 when it was free to choose one (else None).
    """

    record: ServerRecord
    started: bool
    port_note: str | None = None


def export_line(record: ServerRecord) -> str:
    """The shell line that points ``prefect`` commands at the server (with its ``/api``)."""
    return f"export PREFECT_API_URL={record.api_url}"


def start_server(port: int | None = None) -> ServerStart:
    """Start the persistent server, or find the one already running.

    Parameters
    ----------
    port : int | None, default: None
        Port on 127.0.0.1. None means 4200 (Prefect's usual port) when it is free, else any
        free port.

    Returns
    -------
    ServerStart
        The server's record, whether this call started it, and (when ``port`` is None and
        port 4200 was taken) why it listens on another port.

    Raises
    ------
    ServerPortInUseError
        The port asked for is taken by another program.
    PrefectServerError
        The server did not come up; the message carries the end of its log.
    """
    status, record = server_status()
    if status == "running" and record is not None:
        return ServerStart(record, started=False)
    if status == "not responding" and record is not None:
        raise PrefectServerError(
            f"the spikelab Prefect server (PID {record.pid}, port {record.port}) runs but does "
            f"not answer; see {record.log}, or `spikelab server stop` and start it again"
        )
    record_path().unlink(missing_ok=True)  # stale
    chosen = _choose_port(port)
    note = None if port is not None or chosen == DEFAULT_PORT else _default_port_taken(chosen)
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log = home / LOG_NAME
    with log.open("ab") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *_uvicorn_arguments(chosen)],
            env=_server_environment(temporary=False),
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command on purpose
        )
    record = ServerRecord(
        pid=process.pid, port=chosen, started=datetime.now(UTC).isoformat(), log=str(log)
    )
    try:
        _write_record(record)
    except PrefectServerError:
        stop_process(process)
        raise
    try:
        wait_until_healthy(process, record.api_url, _startup_timeout(), log)
    except PrefectServerError:
        stop_process(process)
        record_path().unlink(missing_ok=True)
        raise
    return ServerStart(record, started=True, port_note=note)


def _choose_port(port: int | None) -> int:
    if port is None:
        return DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
    if not port_is_free(port):
        raise ServerPortInUseError(
            f"port {port} on {HOST} is already in use (another Prefect server or program): "
            f"choose another with --port, or, if it is a Prefect server you want to use, "
            f"set PREFECT_API_URL=http://{HOST}:{port}/api"
        )
    return port


def _default_port_taken(chosen: int) -> str:
    """Why the server listens on ``chosen``: port 4200 was taken, and by what."""
    usual = f"http://{HOST}:{DEFAULT_PORT}/api"
    if healthy(usual, timeout=2.0):
        return (
            f"port {DEFAULT_PORT} is taken by another Prefect server (not one spikelab "
            f"started), so this one listens on port {chosen}; to use that one instead, "
            f"`spikelab server stop` and export PREFECT_API_URL={usual}"
        )
    return (
        f"port {DEFAULT_PORT} is taken by another program, so the server listens on port "
        f"{chosen} (--port N chooses one)"
    )


def _write_record(record: ServerRecord) -> None:
    """Write the record whole and only if none exists (two starts at once: one wins)."""
    path = record_path()
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_text(json.dumps(asdict(record), indent=2))
    try:
        os.link(partial, path)
    except FileExistsError:
        raise PrefectServerError(
            f"another `spikelab server start` is starting a server ({path} appeared): "
            "see `spikelab server status`"
        ) from None
    finally:
        partial.unlink()


def stop_server(timeout: float = 15.0) -> str:
    """Stop the persistent server spikelab started (by its recorded PID); say what happened."""
    status, record = server_status()
    if record is None:
        return "no spikelab Prefect server is running"
    if status == "stale":
        record_path().unlink(missing_ok=True)
        return (
            f"no spikelab Prefect server is running (removed a stale record: PID {record.pid} "
            "is gone or is another program)"
        )
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while is_our_server(record.pid, record.port):
        if time.monotonic() > deadline:
            _signal_group(record.pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.1)
    record_path().unlink(missing_ok=True)
    return f"stopped the spikelab Prefect server (PID {record.pid}, {record.address})"


def _signal_group(pid: int, signum: int) -> None:
    """Signal the server's process group (it leads one), else the process alone."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return


@contextmanager
def flow_backend(
    *, keep_server: bool = False, say: bool = True
) -> Iterator[TemporaryServer | None]:
    """Make a Prefect API reachable for the flows this process runs.

    In order of preference: the API the user configured (``PREFECT_API_URL``), the
    persistent spikelab server, or (``keep_server``) a persistent server started now, else a
    temporary server that stops when the block ends. The caller imports its flows inside the
    block and calls ``wait_ready()`` on the yielded temporary server (if any) before running
    them, so both happen at once.
    """
    if configured_api_url():
        yield None
        return
    record = running_server()
    if record is None and keep_server:
        start = start_server()
        record = start.record
        if say:
            print(
                "spikelab: started a Prefect server that keeps running "
                "(`spikelab server stop` stops it)",
                file=sys.stderr,
            )
            if start.port_note:
                print(f"spikelab: {start.port_note}", file=sys.stderr)
    if record is not None:
        if say:
            print(f"spikelab: Prefect UI at {record.address}", file=sys.stderr)
        with _api_url(record.api_url):
            yield None
        return
    if say:
        print(FASTER_RUNS_HINT, file=sys.stderr)
    with TemporaryServer() as temporary, _api_url(temporary.api_url):
        yield temporary


@contextmanager
def _api_url(url: str) -> Iterator[None]:
    """Point this process's Prefect settings at ``url`` for the block."""
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        if "prefect.settings" in sys.modules:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield
        else:
            yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before
