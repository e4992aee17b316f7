"""HTTP plumbing shared by the DANDI stand-in's API and blob servers.

Every request, whatever its method, goes through :meth:`StandInHandler._dispatch`: it is
recorded, takes the next matching fault, waits the configured latency, and only then
reaches the server's own :meth:`StandInHandler._answer`.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any

from spikelab.testing._dandi_state import ArchiveState, RecordedRequest

_STATUS_FAULTS = {"500": 500, "503": 503, "429": 429}
_SLOW_SECONDS = 2.0


class StandInServer(ThreadingHTTPServer):
    """Threading HTTP server that tracks its open connections so it can stop promptly."""

    daemon_threads = True
    block_on_close = True
    request_queue_size = 64

    def __init__(self, standin: ArchiveState, name: str, handler: type[StandInHandler]) -> None:
        self.standin = standin
        self.name = name
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    @property
    def port(self) -> int:
        """The ephemeral port the server listens on."""
        return int(self.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler thread blocked on a kept-alive or in-flight connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            return  # the client went away: nothing to report
        if isinstance(error, OSError) and self.standin._stopping.is_set():
            return  # our own shutdown interrupted a transfer
        super().handle_error(request, client_address)


class StandInHandler(BaseHTTPRequestHandler):
    """Records, faults and latency for every request; subclasses write :meth:`_answer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # Every method goes through one entry point so that all requests are recorded.
    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    @property
    def standin(self) -> ArchiveState:
        """The archive this server answers for."""
        return self.server.standin

    def _answer(self, fault: str | None) -> None:
        """Answer a GET or HEAD request; ``fault`` is a body fault it took, if any."""
        raise NotImplementedError

    def _dispatch(self) -> None:
        standin = self.standin
        name = self.server.name
        standin._record(RecordedRequest(name, self.command, self.path, dict(self.headers.items())))
        self._discard_request_body()
        fault = standin._take_fault(name, self.command, self.path)
        if standin.latency_seconds:  # a wide-area link: every answer waits this long
            standin._stopping.wait(standin.latency_seconds)
        try:
            if fault == "slow":
                if standin._stopping.wait(_SLOW_SECONDS):
                    self.close_connection = True
                    return
                fault = None
            if fault in _STATUS_FAULTS:
                headers = {"Retry-After": "0"} if fault == "429" else {}
                status = _STATUS_FAULTS[fault]
                self._send_json(status, {"detail": f"Injected fault: {fault}"}, headers)
                return
            if self.command not in ("GET", "HEAD"):
                self._send_json(405, {"detail": f'Method "{self.command}" not allowed.'})
                return
            self._answer(fault)
        except OSError:
            raise
        except Exception:  # a bug in the stand-in: report it loudly, answer 500
            traceback.print_exc()
            self._send_json(500, {"detail": "stand-in error"})

    def _discard_request_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _abort(self) -> None:
        """Close the connection with a TCP reset (SO_LINGER 0) instead of a clean FIN."""
        self.close_connection = True
        connection = self.connection
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # drop the makefile reference so close() really closes
        connection.close()
