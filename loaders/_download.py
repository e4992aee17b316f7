"""Verified, resumable downloads of DANDI assets, with bounded memory."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from spikelab.exceptions import DigestMismatchError, RemoteError
from spikelab.loaders._dandi_client import DandiClient

ETAG_PART_SIZE = 64 * 1024 * 1024
ETAG_MAX_PARTS = 10_000
CHUNK_BYTES = 1024 * 1024  # largest network read; each read returns what has arrived
HASH_READ_BYTES = 1024 * 1024  # local reads when hashing a file already on disk
SHA256 = "dandi:sha2-256"
ETAG = "dandi:dandi-etag"


class EtagDigest:
    """Incremental DANDI etag: the S3 multipart ETag of the file's parts."""

    def __init__(self, size: int) -> None:
        parts = math.ceil(size / ETAG_PART_SIZE)
        self.part_size = (
            ETAG_PART_SIZE if parts < ETAG_MAX_PARTS else math.ceil(size / ETAG_MAX_PARTS)
        )
        self._part = hashlib.md5()
        self._in_part = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        """Feed the next bytes of the file."""
        view = memoryview(data)
        while view.nbytes:
            take = min(self.part_size - self._in_part, view.nbytes)
            self._part.update(view[:take])
            self._in_part += take
            view = view[take:]
            if self._in_part == self.part_size:
                self._digests.append(self._part.digest())
                self._part, self._in_part = hashlib.md5(), 0

    def hexdigest(self) -> str:
        """Return the etag of everything fed so far."""
        digests = self._digests + ([self._part.digest()] if self._in_part else [])
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def expected_digest(digests: Mapping[str, str]) -> tuple[str, str] | None:
    """Pick the published digest to verify: sha2-256 when present, else the dandi-etag."""
    for kind in (SHA256, ETAG):
        if digests.get(kind):
            return kind, digests[kind]
    return None


def _hasher(kind: str, size: int) -> Any:
    return hashlib.sha256() if kind == SHA256 else EtagDigest(size)


def file_matches(path: Path, size: int | None, digests: Mapping[str, str]) -> bool:
    """Tell whether a local file has the published size and digest (hashing it once)."""
    if not path.is_file() or size is None or path.stat().st_size != size:
        return False
    expected = expected_digest(digests)
    if expected is None:
        return True
    hasher = _hasher(expected[0], size)
    with path.open("rb") as handle:
        while block := handle.read(HASH_READ_BYTES):
            hasher.update(block)
    return bool(hasher.hexdigest() == expected[1])


def safe_destination(download_dir: Path, asset_path: str) -> Path:
    """Place an asset under ``download_dir``, refusing paths that would leave it.

    Raises
    ------
    ValueError
        For absolute paths or ``..`` components.
    """
    relative = PurePosixPath(asset_path.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(
            f"refusing asset path {asset_path!r}: it would be written outside {download_dir}"
        )
    root = download_dir.resolve()
    destination = root.joinpath(*relative.parts).resolve()
    if not destination.is_relative_to(root):
        raise ValueError(f"refusing asset path {asset_path!r}: it resolves outside {download_dir}")
    return destination


def download_verified(
    client: DandiClient,
    url: str,
    destination: Path,
    *,
    size: int | None,
    digests: Mapping[str, str],
    timeout_seconds: float = 600.0,
) -> Path:
    """Stream ``url`` to ``destination``; verify size and digest before renaming into place.

    Bytes go to ``<destination>.partial``, hashed as they arrive. A broken transfer resumes
    with an HTTP Range request; an earlier partial file is resumed only when it was started
    for the same published digest. On a size or digest mismatch the partial file is deleted.

    Raises
    ------
    DigestMismatchError
        The bytes do not match the published size or digest.
    RemoteError
        The transfer kept failing, or took longer than ``timeout_seconds``.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    marker = destination.with_name(destination.name + ".partial.json")
    expected = expected_digest(digests)
    identity = {"size": size, "digest": list(expected) if expected else None}
    if not (marker.is_file() and json.loads(marker.read_text()) == identity):
        partial.unlink(missing_ok=True)
    marker.write_text(json.dumps(identity))
    hasher = _hasher(expected[0], size or 0) if expected else None
    have = 0
    if partial.is_file():
        with partial.open("rb") as handle:
            while block := handle.read(HASH_READ_BYTES):
                if hasher is not None:
                    hasher.update(block)
                have += len(block)

    deadline = time.monotonic() + timeout_seconds
    failures = 0
    progress = tqdm(
        total=size,
        initial=have,
        unit="B",
        unit_scale=True,
        desc=destination.name,
        disable=None,
        leave=False,
    )
    while size is None or have < size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = client.request("GET", url, headers=headers, stream=True)
            with response, partial.open("ab" if response.status_code == 206 else "wb") as out:
                if response.status_code != 206 and have:
                    have = 0  # the server ignored Range: start over
                    hasher = _hasher(expected[0], size or 0) if expected else None
                # read1 hands over whatever has arrived (up to CHUNK_BYTES), so big reads keep
                # throughput up and a broken connection loses nothing already received
                while block := response.raw.read1(CHUNK_BYTES):
                    out.write(block)
                    if hasher is not None:
                        hasher.update(block)
                    have += len(block)
                    progress.update(len(block))
                    if time.monotonic() > deadline:
                        raise RemoteError(
                            f"downloading {destination.name} took longer than "
                            f"{timeout_seconds:g} s; raise download_timeout_seconds"
                        )
            if size is None:
                break
            if have < size:
                raise requests.exceptions.ChunkedEncodingError("body ended early")
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
            ConnectionError,  # the builtin: a reset socket that slipped through unwrapped
        ) as error:
            failures += 1
            if failures >= client.max_attempts:
                raise RemoteError(
                    f"downloading {destination.name} kept failing ({type(error).__name__}) "
                    f"after {failures} attempts at byte {have} of {size}"
                ) from None
            client.wait_before_retry(failures)

    progress.close()
    _verify(partial, marker, destination, have, size, expected, hasher)
    os.replace(partial, destination)
    marker.unlink(missing_ok=True)
    return destination


def _verify(
    partial: Path,
    marker: Path,
    destination: Path,
    have: int,
    size: int | None,
    expected: tuple[str, str] | None,
    hasher: Any,
) -> None:
    problem = None
    if size is not None and have != size:
        problem = f"{have} bytes arrived but the archive lists {size}"
    elif expected is not None and hasher.hexdigest() != expected[1]:
        problem = f"{expected[0]} is {hasher.hexdigest()} but the archive publishes {expected[1]}"
    if problem:
        partial.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        raise DigestMismatchError(
            f"download of {destination.name} is corrupt: {problem}; nothing was kept, try again"
        )
