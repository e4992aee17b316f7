"""The DANDI stand-in's blob store: an S3-like bucket that serves byte ranges.

It never reads an ``Authorization`` header; an embargoed blob answers 403 unless the URL
carries the signature the download redirect adds. The body faults (``reset``, ``truncate``,
``no-range``, ``corrupt``) take effect here.
"""

from __future__ import annotations

import re
from email.utils import format_datetime
from urllib.parse import urlsplit

from spikelab.testing._dandi_digests import iter_chunks
from spikelab.testing._dandi_http import StandInHandler
from spikelab.testing._dandi_state import Asset

_PREFIX = "/blobs/"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
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


class BlobHandler(StandInHandler):
    """Answers ``/blobs/<key>`` with the blob's bytes, whole or a range of them."""

    def _answer(self, fault: str | None) -> None:
        asset = self._readable_asset()
        if asset is None:
            return
        span = self._span(asset.size, fault)
        if span is None:
            return
        start, length, status = span
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", format_datetime(asset.created, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{asset.size}")
        self.end_headers()
        if self.command != "HEAD":
            self._send_body(asset, start, length, fault)

    def _readable_asset(self) -> Asset | None:
        """The asset whose blob the request names; None once 404 or 403 is answered."""
        standin = self.standin
        route = urlsplit(self.path).path
        asset = standin._blob(route[len(_PREFIX) :]) if route.startswith(_PREFIX) else None
        if asset is None:
            self._send_json(404, {"detail": "NoSuchKey"})
            return None
        if (
            asset.dandiset_id in standin._embargoed
            and self.path
            != urlsplit(standin._presigned(asset))._replace(scheme="", netloc="").geturl()
        ):
            self._send_json(403, {"detail": "AccessDenied"})  # a private bucket
            return None
        return asset

    def _span(self, size: int, fault: str | None) -> tuple[int, int, int] | None:
        """``(start, length, status)`` the Range header asks for; None once 416 is answered."""
        range_header = self.headers.get("Range")
        if not range_header or fault == "no-range":
            return 0, size, 200
        parsed = parse_range(range_header, size)
        if isinstance(parsed, str):  # "unsatisfiable"
            self._send_json(416, {"detail": "InvalidRange"}, {"Content-Range": f"bytes */{size}"})
            return None
        if parsed is None:
            return 0, size, 200
        start, end = parsed
        return start, end - start + 1, 206

    def _send_body(self, asset: Asset, start: int, length: int, fault: str | None) -> None:
        """Write the bytes, paced by the shared link, broken as the body fault says."""
        standin = self.standin
        to_send = length // 2 if fault in ("reset", "truncate") else length
        pieces = iter_chunks(asset.content, standin._chunk_size(), start, to_send)
        for index, piece in enumerate(pieces):
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
