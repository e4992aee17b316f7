"""``spikelab server`` and ``spikelab serve``: the local Prefect server and the deployments."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spikelab.cli.flow_runs import prefect_backend
from spikelab.cli.parser import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from spikelab.server import ServerRecord


def server_command(action: str, port: int | None) -> int:
    """Start, stop or check the local Prefect server; return the exit status."""
    from spikelab import server

    if action == "start":
        start = server.start_server(port)
        record = start.record
        verb = "started" if start.started else "already running:"
        print(f"{verb} Prefect server {record.address} (PID {record.pid}, log {record.log})")
        if start.port_note:
            print(start.port_note)
        print(f"Prefect UI: {record.address}; every spikelab command now uses this server")
        _print_export(record)
        return EXIT_OK
    if action == "stop":
        print(server.stop_server())
        return EXIT_OK
    return _server_status()


def _server_status() -> int:
    from spikelab import server

    status, found = server.server_status()
    if found is None:
        print("no spikelab Prefect server is running")
    elif status == "stale":
        print(
            f"stale: {server.record_path()} names PID {found.pid}, which is gone or is "
            "another program (`spikelab server stop` removes the record)"
        )
    else:
        print(f"{status}: Prefect server {found.address} (PID {found.pid})")
        _print_export(found)
    return EXIT_OK if status == "running" else EXIT_FAILED


def _print_export(record: ServerRecord) -> None:
    """Say how to point ``prefect`` commands (deploy, work pools, workers) at the server."""
    from spikelab import server

    print("for `prefect` commands (work-pool create, deploy, worker start), run first:")
    print(f"  {server.export_line(record)}")


def serve() -> None:
    """Serve the deployments against the local, configured or a temporary server."""
    from spikelab.deployments import check_lake_variable

    check_lake_variable()  # a usage error before any server starts
    with prefect_backend() as temporary:
        from spikelab.deployments import serve_all

        if temporary is not None:
            temporary.wait_ready()
        serve_all()
