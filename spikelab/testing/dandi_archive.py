"""A local stand-in for the DANDI archive: REST API server plus a separate blob server.

Both servers listen on 127.0.0.1 with ephemeral ports and answer over real sockets, so the
code under test runs its real HTTP stack. Only the standard library is used.

Example::

    with DandiStandIn(tmp_path) as dandi:
        asset_id = dandi.add_asset("000123", "sub-01/sub-01_ecephys.nwb", b"...")
        dandi.inject("503", times=2, match="/assets/")
        ...  # point the client at dandi.api_base
        assert dandi.count("blob", "GET") == 1

Behaviour worth knowing when writing tests against it:

- A dandiset is embargoed as soon as one of its assets was added with ``embargoed=True``;
  listing, asset metadata and the API download endpoint then need
  ``Authorization: token <token>`` (missing header: 401, anything else: 403). The blob
  server never reads an ``Authorization`` header (tests can check that none reached it);
  like the archive's private bucket it answers 403 for an embargoed blob unless the URL
  carries the signature the download redirect adds (its ``contentUrl`` is not enough).
- Faults are consumed first-in first-out. ``"500"``, ``"503"``, ``"429"`` and ``"slow"``
  apply to any request on either server; ``"reset"``, ``"truncate"``, ``"no-range"`` and
  ``"corrupt"`` (the whole body arrives, with its first byte flipped) are about a response
  body, so only GET requests to the blob server consume them.
- ``add_asset`` accepts crafted ``asset_id`` and ``blob_id`` values (``"../../x"``, an
  absolute path, anything): the listing serves them as given and, like a hostile server,
  the API answers for such an asset at whatever URL a client's request for it arrives as
  (after the client removes ``..`` segments). ``add_zarr_asset`` publishes a Zarr asset:
  listed with ``zarr`` set and no ``blob``; its download endpoint answers 400.
- The listing adds each asset's metadata record (the same one ``/assets/{id}/`` answers)
  under ``metadata`` when asked with ``metadata=true`` (or ``1``), as DANDI does.
- Adding an asset at a path that already exists in that dandiset version replaces it in the
  listing (as a re-upload does); the old asset id still answers on ``/assets/{id}/``.
- Digests are computed when first asked for (and cached per part-size setting), so a
  500 MB file-backed asset costs nothing until its metadata is requested, and
  monkeypatching ``ETAG_PART_SIZE`` inside a test takes effect.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import re
import socket
import struct
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = [
    "CHUNK_SIZE",
    "ETAG_MAX_PARTS",
    "ETAG_PART_SIZE",
    "FAULT_KINDS",
    "DandiStandIn",
    "RecordedRequest",
    "dandi_etag",
]

#: S3 multipart part size the archive uses for ``dandi:dandi-etag`` (64 MiB).
ETAG_PART_SIZE = 64 * 2**20
#: S3's maximum number of parts; at or above it the part size grows to fit.
ETAG_MAX_PARTS = 10_000
#: Size of the reads and writes used to hash and stream file-backed content.
CHUNK_SIZE = 2**20

FAULT_KINDS = ("500", "503", "429", "reset", "truncate", "slow", "no-range", "corrupt")
_STATUS_FAULTS = {"500": 500, "503": 503, "429": 429}
_BODY_FAULTS = {"reset", "truncate", "no-range", "corrupt"}
_SLOW_SECONDS = 2.0

_NOT_FOUND = {"detail": "Not found."}
_NO_CREDENTIALS = {"detail": "Authentication credentials were not provided."}
_FORBIDDEN = {"detail": "You do not have permission to perform this action."}

_LISTING = re.compile(r"^/api/dandisets/(?P<dandiset>[^/]+)/versions/(?P<version>[^/]+)/assets/$")
_VERSION_ASSET = re.compile(
    r"^/api/dandisets/(?P<dandiset>[^/]+)/versions/(?P<version>[^/]+)/assets/(?P<asset>[^/]+)/$"
)
_ASSET = re.compile(r"^/api/assets/(?P<asset>[^/]+)/$")
_DOWNLOAD = re.compile(r"^/api/assets/(?P<asset>[^/]+)/download/$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


# --------------------------------------------------------------------------------------
# Digests
# --------------------------------------------------------------------------------------


def _etag_part_size(size: int) -> int:
    """Part size of the archive's S3 multipart upload for a blob of ``size`` bytes."""
    part_size = ETAG_PART_SIZE
    if math.ceil(size / part_size) >= ETAG_MAX_PARTS:
        part_size = math.ceil(size / ETAG_MAX_PARTS)
    return part_size


def _iter_chunks(
    content: bytes | Path, start: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """Yield ``content[start:start + length]`` in pieces of at most ``CHUNK_SIZE`` bytes."""
    if isinstance(content, Path):
        with content.open("rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                piece = handle.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
                if not piece:
                    return
                if remaining is not None:
                    remaining -= len(piece)
                yield piece
    else:
        view = memoryview(content)
        end = len(content) if length is None else min(len(content), start + length)
        for offset in range(start, end, CHUNK_SIZE):
            yield bytes(view[offset : min(end, offset + CHUNK_SIZE)])


def _compute_digests(content: bytes | Path, *, with_sha256: bool) -> tuple[str, str | None]:
    """Return ``(dandi-etag, sha256 hex or None)`` from one pass over the content."""
    size = content.stat().st_size if isinstance(content, Path) else len(content)
    part_size = _etag_part_size(size) if size else 0
    sha = hashlib.sha256() if with_sha256 else None
    part_digests: list[bytes] = []
    part = hashlib.md5()
    filled = 0
    for chunk in _iter_chunks(content):
        if sha is not None:
            sha.update(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_size - filled)
            part.update(view[:take])
            filled += take
            view = view[take:]
            if filled == part_size:
                part_digests.append(part.digest())
                part = hashlib.md5()
                filled = 0
    if filled:
        part_digests.append(part.digest())
    etag = f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"
    return etag, None if sha is None else sha.hexdigest()


def dandi_etag(path_or_bytes: bytes | str | os.PathLike[str]) -> str:
    """Compute the archive's ``dandi:dandi-etag`` of a file or a byte string.

    The value is the ETag S3 gives a multipart upload with 64 MiB parts (when that gives
    10,000 parts or more, the part size is ``ceil(size / 10,000)``): the md5 of the
    concatenated binary md5 digests of the parts, in hex, then ``-<number of parts>``.
    An empty blob has no parts: ``md5(b"").hexdigest() + "-0"``.

    Parameters
    ----------
    path_or_bytes : bytes or path-like
        The content itself, or the path of a file to read in chunks.

    Returns
    -------
    str
        The etag, e.g. ``"d41d8cd98f00b204e9800998ecf8427e-0"``.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        content: bytes | Path = bytes(path_or_bytes)
    else:
        content = Path(path_or_bytes)
    return _compute_digests(content, with_sha256=False)[0]


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as either server received it."""

    server: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Fault:
    kind: str
    remaining: int
    match: str


@dataclass
class _Asset:
    asset_id: str
    dandiset_id: str
    version: str
    path: str
    content: bytes | Path
    size: int
    publish_sha256: bool
    blob_id: str
    created: datetime
    corrupt: bool = False
    replaced: bool = False
    zarr_id: str | None = None
    crafted: bool = False
    _digests: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    _digest_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def blob_key(self) -> str:
        return f"{self.blob_id[:3]}/{self.blob_id[3:6]}/{self.blob_id}"

    def digests(self) -> tuple[str, str]:
        """Return the true ``(etag, sha256)``, computing them once per part-size setting."""
        key = (ETAG_PART_SIZE, ETAG_MAX_PARTS)
        with self._digest_lock:
            if key not in self._digests:
                etag, sha = _compute_digests(self.content, with_sha256=True)
                assert sha is not None
                self._digests[key] = (etag, sha)
            return self._digests[key]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Whole-path, case-insensitive pattern in which only ``*`` is special."""
    body = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.compile(body, re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Threading HTTP server that tracks its open connections so it can stop promptly."""

    daemon_threads = True
    block_on_close = True
    request_queue_size = 64

    def __init__(self, standin: DandiStandIn, name: str) -> None:
        self.standin = standin
        self.name = name
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    @property
    def port(self) -> int:
        return int(self.server_address[1])

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

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
    def standin(self) -> DandiStandIn:
        return self.server.standin

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
            if name == "api":
                self._api()
            else:
                self._blob(fault)
        except OSError:
            raise
        except Exception:  # a bug in the stand-in: report it loudly, answer 500
            traceback.print_exc()
            self._send_json(500, {"detail": "stand-in error"})

    def _discard_request_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            self.rfile.read(length)

    # ---------------------------------------------------------------- responses

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

    # ---------------------------------------------------------------- API server

    def _authorised(self, dandiset_id: str) -> bool:
        """Check embargo credentials; answer 401/403 and return False when they fail."""
        standin = self.standin
        if dandiset_id not in standin._embargoed:
            return True
        value = self.headers.get("Authorization")
        if value is None:
            self._send_json(401, _NO_CREDENTIALS)
            return False
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "token" or token.strip() != standin.token:
            self._send_json(403, _FORBIDDEN)
            return False
        return True

    def _api(self) -> None:
        split = urlsplit(self.path)
        route = split.path
        standin = self.standin
        crafted = standin._crafted_route(route)
        if crafted is not None:  # a hostile server answers wherever the request lands
            target, download = crafted
            if download:
                self._redirect(target)
            else:
                self._send_json(200, standin._metadata(target))
        elif m := _LISTING.match(route):
            self._listing(m["dandiset"], m["version"], split.query)
        elif m := _VERSION_ASSET.match(route):
            asset = standin._asset(m["asset"])
            if (
                asset is None
                or asset.replaced
                or (asset.dandiset_id, asset.version) != (m["dandiset"], m["version"])
            ):
                self._send_json(404, _NOT_FOUND)
            elif self._authorised(asset.dandiset_id):
                self._send_json(200, standin._metadata(asset))
        elif m := _ASSET.match(route):
            asset = standin._asset(m["asset"])
            if asset is None:
                self._send_json(404, _NOT_FOUND)
            elif self._authorised(asset.dandiset_id):
                self._send_json(200, standin._metadata(asset))
        elif m := _DOWNLOAD.match(route):
            asset = standin._asset(m["asset"])
            if asset is None:
                self._send_json(404, _NOT_FOUND)
            elif self._authorised(asset.dandiset_id):
                self._redirect(asset)
        else:
            self._send_json(404, _NOT_FOUND)

    def _redirect(self, asset: _Asset) -> None:
        """Answer a download request: 302 to the blob (400 for a Zarr asset, as DANDI does)."""
        if asset.zarr_id is not None:
            self._send_json(400, {"detail": "Zarr assets cannot be downloaded this way."})
            return
        self.send_response(302)
        self.send_header("Location", self.standin._presigned(asset))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _listing(self, dandiset_id: str, version: str, query: str) -> None:
        standin = self.standin
        params = parse_qsl(query, keep_blank_values=True)
        values = dict(params)
        assets = standin._version_assets(dandiset_id, version)
        if assets is None:
            self._send_json(404, _NOT_FOUND)
            return
        if not self._authorised(dandiset_id):
            return
        try:
            page_size = int(values.get("page_size", "100"))
            page = int(values.get("page", "1"))
        except ValueError:
            self._send_json(400, {"detail": "page and page_size must be integers."})
            return
        if not 1 <= page_size <= standin.page_size_max:
            self._send_json(
                400, {"page_size": [f"Ensure this value is between 1 and {standin.page_size_max}."]}
            )
            return
        if "glob" in values:
            pattern = _glob_regex(values["glob"])
            assets = [a for a in assets if pattern.fullmatch(a.path)]
        if "path" in values:
            prefix = values["path"].lower()
            assets = [a for a in assets if a.path.lower().startswith(prefix)]
        order = values.get("order", "path")
        keys = {"path": "path", "created": "created", "modified": "created", "size": "size"}
        key = keys.get(order.lstrip("-"), "path")
        assets.sort(key=lambda a: (getattr(a, key), a.path), reverse=order.startswith("-"))

        pages = max(1, math.ceil(len(assets) / page_size))
        if not 1 <= page <= pages:
            self._send_json(404, {"detail": "Invalid page."})
            return

        def link(number: int) -> str | None:
            if not 1 <= number <= pages:
                return None
            kept = [(k, v) for k, v in params if k != "page"] + [("page", str(number))]
            return f"{standin._origin('api')}{urlsplit(self.path).path}?{urlencode(kept)}"

        chunk = assets[(page - 1) * page_size : page * page_size]
        # DANDI adds each asset's metadata record when asked (?metadata=true or 1)
        with_metadata = values.get("metadata", "").lower() in ("1", "true")
        results = [
            {
                "asset_id": a.asset_id,
                "blob": None if a.zarr_id else a.blob_id,
                "zarr": a.zarr_id,
                "path": a.path,
                "size": a.size,
                "created": _iso(a.created),
                "modified": _iso(a.created),
                **({"metadata": standin._metadata(a)} if with_metadata else {}),
            }
            for a in chunk
        ]
        self._send_json(
            200,
            {
                "count": len(assets),
                "next": link(page + 1),
                "previous": link(page - 1),
                "results": results,
            },
        )

    # ---------------------------------------------------------------- blob server

    def _blob(self, fault: str | None) -> None:
        standin = self.standin
        route = urlsplit(self.path).path
        prefix = "/blobs/"
        asset = standin._blob(route[len(prefix) :]) if route.startswith(prefix) else None
        if asset is None:
            self._send_json(404, {"detail": "NoSuchKey"})
            return
        if (
            asset.dandiset_id in standin._embargoed
            and self.path
            != urlsplit(standin._presigned(asset))._replace(scheme="", netloc="").geturl()
        ):
            self._send_json(403, {"detail": "AccessDenied"})  # a private bucket
            return
        size = asset.size
        start, length, status = 0, size, 200
        range_header = self.headers.get("Range")
        if range_header and fault != "no-range":
            parsed = self._parse_range(range_header, size)
            if isinstance(parsed, str):  # "unsatisfiable"
                self._send_json(
                    416, {"detail": "InvalidRange"}, {"Content-Range": f"bytes */{size}"}
                )
                return
            if parsed is not None:
                start, end = parsed
                length, status = end - start + 1, 206

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", format_datetime(asset.created, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return

        to_send = length // 2 if fault in ("reset", "truncate") else length
        for index, piece in enumerate(_iter_chunks(asset.content, start, to_send)):
            if fault == "corrupt" and index == 0:
                piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
            standin._pace(len(piece))
            self.wfile.write(piece)
            standin._count_bytes(len(piece))
        if fault == "reset":
            # Give the client a moment to take the bytes in flight, then reset.
            standin._stopping.wait(0.05)
            self._abort()
        elif fault == "truncate":
            self.close_connection = True

    @staticmethod
    def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
        """Return ``(start, end)`` inclusive, ``"unsatisfiable"``, or None to ignore it."""
        m = _RANGE.match(header.strip())
        if m is None or (not m[1] and not m[2]):
            return None  # malformed or multi-range: serve the whole body, as S3 does
        if not m[1]:  # suffix range: the last N bytes
            suffix = int(m[2])
            if suffix == 0 or size == 0:
                return "unsatisfiable"
            return max(0, size - suffix), size - 1
        start = int(m[1])
        end = int(m[2]) if m[2] else size - 1
        if m[2] and end < start:
            return None
        if start >= size:
            return "unsatisfiable"
        return start, min(end, size - 1)


# --------------------------------------------------------------------------------------
# Public stand-in
# --------------------------------------------------------------------------------------


class DandiStandIn:
    """The DANDI archive API and its blob store, served on 127.0.0.1 for tests.

    Parameters
    ----------
    root : Path
        A scratch directory (usually ``tmp_path``), kept as ``self.root`` for callers.
    token : str, default: "s3cr3t-token"
        The API token that opens embargoed dandisets.
    page_size_max : int, default: 1000
        Largest accepted ``page_size``; larger values answer 400.

    Attributes ``blob_bytes_served`` (body bytes sent by the blob server),
    ``latency_seconds`` (a delay added to every answer) and ``bandwidth_bytes_per_second``
    (0: loopback speed; else one link of that capacity, shared by every blob answer) serve
    the streaming tests and benchmarks.
    """

    def __init__(
        self, root: Path, *, token: str = "s3cr3t-token", page_size_max: int = 1000
    ) -> None:
        self.root = Path(root)
        self.token = token
        self.page_size_max = page_size_max
        self.api_base = ""
        self.blob_base = ""
        self.requests: list[RecordedRequest] = []
        self.blob_bytes_served = 0  # body bytes the blob server has sent
        self.latency_seconds = 0.0  # added before every answer, to imitate a slow link
        self.bandwidth_bytes_per_second = 0.0  # capacity of a link all blob answers share
        self._link_free_at = 0.0  # when that link has sent everything queued on it
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._assets: dict[str, _Asset] = {}
        self._blobs: dict[str, _Asset] = {}
        self._embargoed: set[str] = set()
        self._versions: set[tuple[str, str]] = set()
        self._faults: list[_Fault] = []
        self._servers: dict[str, _Server] = {}
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> DandiStandIn:
        self._stopping.clear()
        try:
            for name in ("api", "blob"):
                server = _Server(self, name)
                self._servers[name] = server
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.02},
                    name=f"dandi-standin-{name}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self._stop()
            raise
        self.api_base = f"{self._origin('api')}/api"
        self.blob_base = f"{self._origin('blob')}/blobs"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        servers = list(self._servers.values())
        for server in servers:
            server.shutdown()
        for server in servers:
            server.close_connections()
            server.server_close()  # closes the listening socket, joins handler threads
        for thread in self._threads:
            thread.join()
        self._servers.clear()
        self._threads.clear()

    def _origin(self, name: str) -> str:
        return f"http://127.0.0.1:{self._servers[name].port}"

    # ---------------------------------------------------------------- content

    def add_asset(
        self,
        dandiset_id: str,
        path: str,
        content: bytes | Path,
        *,
        version: str = "draft",
        embargoed: bool = False,
        publish_sha256: bool = True,
        asset_id: str | None = None,
        blob_id: str | None = None,
    ) -> str:
        """Publish an asset and return its new asset id.

        Parameters
        ----------
        dandiset_id : str
            The dandiset, e.g. ``"000123"``.
        path : str
            The asset path inside the dandiset, e.g. ``"sub-01/sub-01_ecephys.nwb"``. It is
            published as given, unchecked, so tests can serve hostile paths such as
            ``"../../escape.nwb"``.
        content : bytes or Path
            Bytes are kept in memory; a file is served from disk in chunks.
        version : str, default: "draft"
            The dandiset version the asset belongs to.
        embargoed : bool, default: False
            Embargo the whole dandiset (its API endpoints then need the token).
        publish_sha256 : bool, default: True
            Whether the metadata lists ``dandi:sha2-256`` next to the etag.
        asset_id, blob_id : str | None, default: None
            Ids to publish instead of new uuid4s; any text, unchecked (a crafted
            ``asset_id`` is answered wherever a request for it lands, see the module notes).

        Returns
        -------
        str
            The asset id.
        """
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
            stored: bytes | Path = data
            size = len(data)
        elif isinstance(content, os.PathLike):
            stored = Path(content)
            if not stored.is_file():
                raise FileNotFoundError(f"asset content {stored} is not a file")
            size = stored.stat().st_size
        else:
            raise TypeError(f"content must be bytes or a Path, not {type(content).__name__}")
        asset = _Asset(
            asset_id=str(uuid.uuid4()) if asset_id is None else asset_id,
            dandiset_id=dandiset_id,
            version=version,
            path=path,
            content=stored,
            size=size,
            publish_sha256=publish_sha256,
            blob_id=str(uuid.uuid4()) if blob_id is None else blob_id,
            created=datetime.now(UTC),
            crafted=asset_id is not None,
        )
        self._publish(asset, embargoed)
        return asset.asset_id

    def add_zarr_asset(self, dandiset_id: str, path: str, *, version: str = "draft") -> str:
        """Publish a Zarr asset (no blob; listed with ``zarr`` set) and return its asset id."""
        asset = _Asset(
            asset_id=str(uuid.uuid4()),
            dandiset_id=dandiset_id,
            version=version,
            path=path,
            content=b"",
            size=0,
            publish_sha256=False,
            blob_id=str(uuid.uuid4()),
            created=datetime.now(UTC),
            zarr_id=str(uuid.uuid4()),
        )
        self._publish(asset, embargoed=False)
        return asset.asset_id

    def _publish(self, asset: _Asset, embargoed: bool) -> None:
        dandiset_id, version, path = asset.dandiset_id, asset.version, asset.path
        with self._lock:
            for other in self._assets.values():
                if (other.dandiset_id, other.version, other.path) == (dandiset_id, version, path):
                    other.replaced = True
            self._assets[asset.asset_id] = asset
            self._blobs[asset.blob_key] = asset
            self._versions.add((dandiset_id, version))
            if embargoed:
                self._embargoed.add(dandiset_id)

    def corrupt_digest(self, asset_id: str) -> None:
        """Make the published ``dandi:dandi-etag`` and ``dandi:sha2-256`` of an asset wrong.

        The wrong values keep the right shape (hex, same part count), so clients fail on
        the comparison, not on parsing.
        """
        with self._lock:
            if asset_id not in self._assets:
                raise KeyError(f"no asset {asset_id!r} in the stand-in")
            self._assets[asset_id].corrupt = True

    # ---------------------------------------------------------------- faults and records

    def inject(self, kind: str, *, times: int = 1, match: str = "") -> None:
        """Queue a fault for the next ``times`` requests whose path contains ``match``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            self._faults.append(_Fault(kind, times, match))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def count(self, server: str | None = None, method: str | None = None, match: str = "") -> int:
        """Count recorded requests by server (``"api"``/``"blob"``), method and path part."""
        with self._lock:
            recorded = list(self.requests)
        return sum(
            1
            for r in recorded
            if (server is None or r.server == server)
            and (method is None or r.method == method.upper())
            and match in r.path
        )

    def _pace(self, size: int) -> None:
        """Hold a piece of a blob answer until the shared link has had time to carry it."""
        if not self.bandwidth_bytes_per_second:
            return
        with self._lock:
            start = max(time.monotonic(), self._link_free_at)
            self._link_free_at = start + size / self.bandwidth_bytes_per_second
            due = self._link_free_at
        self._stopping.wait(max(0.0, due - time.monotonic()))

    def _count_bytes(self, size: int) -> None:
        with self._lock:
            self.blob_bytes_served += size

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _take_fault(self, server: str, method: str, path: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.match not in path:
                    continue
                if fault.kind in _BODY_FAULTS and (server != "blob" or method != "GET"):
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.kind
        return None

    # ---------------------------------------------------------------- lookups

    def _asset(self, asset_id: str) -> _Asset | None:
        with self._lock:
            return self._assets.get(asset_id)

    def _crafted_route(self, route: str) -> tuple[_Asset, bool] | None:
        """The crafted asset a request reaches, and whether it asks for the download."""
        with self._lock:
            crafted = [a for a in self._assets.values() if a.crafted]
        target = posixpath.normpath(route)
        for asset in crafted:
            for suffix, download in (("/", False), ("/download/", True)):
                if posixpath.normpath(f"/api/assets/{asset.asset_id}{suffix}") == target:
                    return asset, download
        return None

    def _presigned(self, asset: _Asset) -> str:
        """The blob URL the download redirect gives: signed when the dandiset is embargoed."""
        url = f"{self.blob_base}/{asset.blob_key}"
        if asset.dandiset_id not in self._embargoed:
            return url
        signature = hashlib.sha256(f"{self.token}:{asset.blob_key}".encode()).hexdigest()
        return f"{url}?X-Amz-Signature={signature}"

    def _blob(self, key: str) -> _Asset | None:
        with self._lock:
            return self._blobs.get(key)

    def _version_assets(self, dandiset_id: str, version: str) -> list[_Asset] | None:
        with self._lock:
            if (dandiset_id, version) not in self._versions:
                return None
            return [
                a
                for a in self._assets.values()
                if (a.dandiset_id, a.version) == (dandiset_id, version) and not a.replaced
            ]

    def _metadata(self, asset: _Asset) -> dict[str, Any]:
        etag, sha = asset.digests()
        if asset.corrupt:
            digest, _, parts = etag.partition("-")
            etag = f"{hashlib.md5(bytes.fromhex(digest)).hexdigest()}-{parts}"
            sha = hashlib.sha256(bytes.fromhex(sha)).hexdigest()
        digests = {"dandi:dandi-etag": etag}
        if asset.publish_sha256:
            digests["dandi:sha2-256"] = sha
        return {
            "id": f"dandiasset:{asset.asset_id}",
            "schemaKey": "Asset",
            "identifier": asset.asset_id,
            "path": asset.path,
            "contentSize": asset.size,
            "contentUrl": [
                f"{self.api_base}/assets/{asset.asset_id}/download/",
                f"{self.blob_base}/{asset.blob_key}",
            ],
            "digest": digests,
            "encodingFormat": "application/x-nwb",
            "blobDateModified": _iso(asset.created),
        }
