"""Verified, resumable downloads of DANDI assets, with bounded memory."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from spikelab.exceptions import DigestMismatchError, RemoteError, UnsafeRemoteDataError
from spikelab.loaders._dandi_client import DandiClient

ETAG_PART_SIZE = 64 * 1024 * 1024
ETAG_MAX_PARTS = 10_000
CHUNK_BYTES = 1024 * 1024  # largest network read; each read returns what has arrived
HASH_READ_BYTES = 1024 * 1024  # local reads when hashing a file already on disk
SHA256 = "dandi:sha2-256"
ETAG = "dandi:dandi-etag"
#: Environment variable: age in hours after which a partial download is thrown away.
PARTIAL_MAX_AGE_VARIABLE = "SPIKELAB_PARTIAL_MAX_AGE_HOURS"
DEFAULT_PARTIAL_MAX_AGE_HOURS = 72.0
# Leftovers of an interrupted download: the partial file, its marker, a temporary file.
_LEFTOVER_SUFFIXES = (".partial", ".partial.json", ".part")


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


def contained(root: Path, path: Path, what: str) -> Path:
    """Resolve ``path`` and check that it lies under ``root``; return the resolved path.

    Symbolic links are followed, so a link planted under ``root`` cannot lead outside.

    Raises
    ------
    UnsafeRemoteDataError
        ``path`` resolves outside ``root``.
    """
    base = root.resolve()
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise UnsafeRemoteDataError(
            f"refusing {what} {path}: it resolves to {resolved}, outside {base}"
        )
    return resolved


def safe_destination(download_dir: Path, asset_path: str) -> Path:
    """Place an asset under ``download_dir``, refusing paths that would leave it.

    Raises
    ------
    UnsafeRemoteDataError
        For absolute paths, ``..`` components, or a path that resolves outside (a ``ValueError``).
    """
    relative = PurePosixPath(asset_path.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UnsafeRemoteDataError(
            f"refusing asset path {asset_path!r}: it would be written outside {download_dir}"
        )
    root = download_dir.resolve()
    destination = root.joinpath(*relative.parts).resolve()
    if not destination.is_relative_to(root):
        raise UnsafeRemoteDataError(
            f"refusing asset path {asset_path!r}: it resolves outside {download_dir}"
        )
    return destination


def partial_max_age_seconds() -> float:
    """How old a partial download may get before it is discarded instead of resumed.

    Read from ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (hours, default 72): a failed run leaves
    its partial download in the cache so that the next run resumes it, but a partial older
    than this, or any stale temporary file of the download area, is deleted.

    Raises
    ------
    ValueError
        The variable is set to something other than a non-negative number.
    """
    text = os.environ.get(PARTIAL_MAX_AGE_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PARTIAL_MAX_AGE_HOURS * 3600
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not hours >= 0:  # also refuses nan
        raise ValueError(
            f"{PARTIAL_MAX_AGE_VARIABLE}={text!r} is not a number of hours >= 0; "
            f"unset it for the default of {DEFAULT_PARTIAL_MAX_AGE_HOURS:g}"
        )
    return hours * 3600


def _older_than(path: Path, max_age_seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > max_age_seconds
    except FileNotFoundError:  # removed meanwhile by a concurrent run
        return False


def _walk(folder: Path) -> Iterator[tuple[Path, list[str]]]:
    """Every folder under ``folder`` with its file names, never following symbolic links."""
    for parent, _, files in os.walk(folder, followlinks=False):
        yield Path(parent), files


def expire_stale_downloads(folder: Path, max_age_seconds: float | None = None) -> list[Path]:
    """Delete partial downloads, their markers and ``.part`` files older than the limit.

    Empty folders that are as old go too. Files still being written are recent, so
    concurrent downloads are left alone; symbolic links are never followed.

    Parameters
    ----------
    folder : Path
        The download area (a missing folder has nothing to expire).
    max_age_seconds : float | None, default: None
        None reads :func:`partial_max_age_seconds`.

    Returns
    -------
    list of Path
        What was deleted.
    """
    limit = partial_max_age_seconds() if max_age_seconds is None else max_age_seconds
    if not folder.is_dir():
        return []
    walked = list(_walk(folder))
    # folders are judged by their age before this sweep empties them (which touches them)
    old_folders = [path for path, _ in walked[1:] if _older_than(path, limit)]
    removed = []
    for parent, files in walked:
        for name in files:
            path = parent / name
            if name.endswith(_LEFTOVER_SUFFIXES) and _older_than(path, limit):
                path.unlink(missing_ok=True)
                removed.append(path)
    for path in sorted(old_folders, key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except OSError:  # not empty, or just filled by a concurrent download
            continue
        removed.append(path)
    return removed


class _Partial:
    """The partial file of one download and the marker naming the digest it was begun for."""

    def __init__(self, destination: Path, size: int | None, expected: tuple[str, str] | None):
        folder = destination.parent
        self.path = contained(folder, folder / f"{destination.name}.partial", "partial file")
        self.marker = contained(folder, folder / f"{destination.name}.partial.json", "marker")
        self.identity = {"size": size, "digest": list(expected) if expected else None}
        self.size = size
        self.expected = expected

    def _marker_matches(self) -> bool:
        try:
            return bool(json.loads(self.marker.read_text()) == self.identity)
        except (OSError, ValueError):  # missing, or torn by a kill
            return False

    def open(self, max_age_seconds: float) -> tuple[Any, int]:
        """Keep a resumable partial file; return a hasher fed with its bytes and its length."""
        if not self._marker_matches() or _older_than(self.path, max_age_seconds):
            self.path.unlink(missing_ok=True)
        self.marker.write_text(json.dumps(self.identity))
        hasher = self.new_hasher()
        have = 0
        if self.path.is_file():
            with self.path.open("rb") as handle:
                while block := handle.read(HASH_READ_BYTES):
                    if hasher is not None:
                        hasher.update(block)
                    have += len(block)
        return hasher, have

    def new_hasher(self) -> Any:
        return _hasher(self.expected[0], self.size or 0) if self.expected else None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)


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
    with an HTTP Range request; a partial file left by an earlier run is resumed only when
    it was started for the same published digest and is younger than
    :func:`partial_max_age_seconds`. Bytes that do not match the published size or digest
    are deleted (with any older file at ``destination``) and never resumed: one fresh
    download follows, in case the transfer itself was corrupted, and a second mismatch is
    an error.

    Raises
    ------
    DigestMismatchError
        Two complete downloads did not match the published size or digest.
    RemoteError
        The transfer kept failing, or took longer than ``timeout_seconds``.
    UnsafeRemoteDataError
        The partial file or its marker would resolve outside the destination's folder.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    expected = expected_digest(digests)
    partial = _Partial(destination, size, expected)
    max_age = partial_max_age_seconds()
    deadline = time.monotonic() + timeout_seconds
    for attempt in (1, 2):
        hasher, have = partial.open(max_age)
        hasher, have = _transfer(
            client, url, partial, destination.name, hasher, have, (deadline, timeout_seconds)
        )
        problem = _mismatch(have, size, expected, hasher)
        if problem is None:
            os.replace(partial.path, destination)
            partial.marker.unlink(missing_ok=True)
            return destination
        partial.discard()
        destination.unlink(missing_ok=True)
        if attempt == 2:
            raise DigestMismatchError(
                f"download of {destination.name} is corrupt: {problem}, also on a fresh "
                "second download; nothing was kept. The archive's copy or its published "
                "digest may be wrong: tell the dandiset's owners"
            )
    raise AssertionError("unreachable: the second attempt returns or raises")


def _transfer(
    client: DandiClient,
    url: str,
    partial: _Partial,
    name: str,
    hasher: Any,
    have: int,
    limit: tuple[float, float],
) -> tuple[Any, int]:
    """Append the rest of the file to the partial file, resuming after broken connections.

    ``limit`` is the monotonic deadline and the timeout it came from. Returns the hasher (a
    new one when the server ignored Range) and the bytes on disk.
    """
    size = partial.size
    deadline, timeout_seconds = limit
    failures = 0
    progress = tqdm(
        total=size, initial=have, unit="B", unit_scale=True, desc=name, disable=None, leave=False
    )
    with progress:
        while size is None or have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                response = client.request("GET", url, headers=headers, stream=True)
                resumed = response.status_code == 206
                with response, partial.path.open("ab" if resumed else "wb") as out:
                    if not resumed and have:
                        have = 0  # the server ignored Range: start over
                        hasher = partial.new_hasher()
                    # read1 hands over whatever has arrived (up to CHUNK_BYTES), so big reads
                    # keep throughput up and a broken connection loses nothing received
                    while block := response.raw.read1(CHUNK_BYTES):
                        out.write(block)
                        if hasher is not None:
                            hasher.update(block)
                        have += len(block)
                        progress.update(len(block))
                        if time.monotonic() > deadline:
                            raise RemoteError(
                                f"downloading {name} took longer than {timeout_seconds:g} s; "
                                "raise download_timeout_seconds"
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
                        f"downloading {name} kept failing ({type(error).__name__}) "
                        f"after {failures} attempts at byte {have} of {size}"
                    ) from None
                client.wait_before_retry(failures)
    return hasher, have


def _mismatch(
    have: int, size: int | None, expected: tuple[str, str] | None, hasher: Any
) -> str | None:
    """Say how the downloaded bytes differ from what the archive publishes, if they do."""
    if size is not None and have != size:
        return f"{have} bytes arrived but the archive lists {size}"
    if expected is not None and hasher.hexdigest() != expected[1]:
        return f"{expected[0]} is {hasher.hexdigest()} but the archive publishes {expected[1]}"
    return None
