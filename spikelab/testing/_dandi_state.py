"""What the DANDI stand-in holds (assets, embargoes, queued faults, recorded requests).

:class:`ArchiveState` is everything its two servers read while answering: lookups, the
asset metadata record, the fault queue, the request log and the shared-link pacing. The
public stand-in (:class:`spikelab.testing.DandiStandIn`) adds the servers and the
publishing API on top of it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from spikelab.testing._dandi_digests import DigestSettings, compute_digests

FAULT_KINDS = ("500", "503", "429", "reset", "truncate", "slow", "no-range", "corrupt")
#: Faults about a response body: only GET requests to the blob server consume them.
BODY_FAULTS = frozenset({"reset", "truncate", "no-range", "corrupt"})


@dataclass
class RecordedRequest:
    """One request as either server received it."""

    server: str
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Fault:
    """A queued fault: its kind, how many more requests take it, and their path part."""

    kind: str
    remaining: int
    match: str


@dataclass
class Asset:
    """One published asset and the blob it serves."""

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
        """The blob's key in the bucket: ``abc/def/abcdef...``."""
        return f"{self.blob_id[:3]}/{self.blob_id[3:6]}/{self.blob_id}"

    def digests(self, settings: DigestSettings) -> tuple[str, str]:
        """Return the true ``(etag, sha256)``, computing them once per part-size setting."""
        key = (settings.part_size, settings.max_parts)
        with self._digest_lock:
            if key not in self._digests:
                self._digests[key] = compute_digests(self.content, settings)
            return self._digests[key]


def iso(moment: datetime) -> str:
    """The archive's spelling of a UTC time: ISO 8601 ending in ``Z``."""
    return moment.isoformat().replace("+00:00", "Z")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Whole-path, case-insensitive pattern in which only ``*`` is special."""
    body = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.compile(body, re.IGNORECASE | re.DOTALL)


class ArchiveState:
    """The archive's contents and bookkeeping, shared by the API and blob servers.

    Parameters
    ----------
    token : str
        The API token that opens embargoed dandisets.
    page_size_max : int
        Largest accepted listing ``page_size``.
    settings : callable
        Returns the digest settings in force; called whenever a digest or a chunked
        read needs them.
    """

    def __init__(
        self, token: str, page_size_max: int, settings: Callable[[], DigestSettings]
    ) -> None:
        self.token = token
        self.page_size_max = page_size_max
        self.api_base = ""
        self.blob_base = ""
        self.requests: list[RecordedRequest] = []
        self.blob_bytes_served = 0  # body bytes the blob server has sent
        self.latency_seconds = 0.0  # added before every answer, to imitate a slow link
        self.bandwidth_bytes_per_second = 0.0  # capacity of a link all blob answers share
        self._settings = settings
        self._link_free_at = 0.0  # when that link has sent everything queued on it
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._assets: dict[str, Asset] = {}
        self._blobs: dict[str, Asset] = {}
        self._embargoed: set[str] = set()
        self._versions: set[tuple[str, str]] = set()
        self._faults: list[Fault] = []

    # ---------------------------------------------------------------- contents

    def _publish(self, asset: Asset, embargoed: bool) -> None:
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

    def _asset(self, asset_id: str) -> Asset | None:
        with self._lock:
            return self._assets.get(asset_id)

    def _blob(self, key: str) -> Asset | None:
        with self._lock:
            return self._blobs.get(key)

    def _version_assets(self, dandiset_id: str, version: str) -> list[Asset] | None:
        with self._lock:
            if (dandiset_id, version) not in self._versions:
                return None
            return [
                a
                for a in self._assets.values()
                if (a.dandiset_id, a.version) == (dandiset_id, version) and not a.replaced
            ]

    def _crafted_route(self, route: str) -> tuple[Asset, bool] | None:
        """The crafted asset a request reaches, and whether it asks for the download."""
        with self._lock:
            crafted = [a for a in self._assets.values() if a.crafted]
        target = posixpath.normpath(route)
        for asset in crafted:
            for suffix, download in (("/", False), ("/download/", True)):
                if posixpath.normpath(f"/api/assets/{asset.asset_id}{suffix}") == target:
                    return asset, download
        return None

    def _presigned(self, asset: Asset) -> str:
        """The blob URL the download redirect gives: signed when the dandiset is embargoed."""
        url = f"{self.blob_base}/{asset.blob_key}"
        if asset.dandiset_id not in self._embargoed:
            return url
        signature = hashlib.sha256(f"{self.token}:{asset.blob_key}".encode()).hexdigest()
        return f"{url}?X-Amz-Signature={signature}"

    def _metadata(self, asset: Asset) -> dict[str, Any]:
        """The asset's metadata record, as ``/assets/{id}/`` answers it."""
        etag, sha = asset.digests(self._settings())
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
            "blobDateModified": iso(asset.created),
        }

    # ---------------------------------------------------------------- faults and records

    def _take_fault(self, server: str, method: str, path: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.match not in path:
                    continue
                if fault.kind in BODY_FAULTS and (server != "blob" or method != "GET"):
                    continue
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault.kind
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

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

    def _chunk_size(self) -> int:
        """Size of the pieces a blob answer is read and written in."""
        return self._settings().chunk_size
