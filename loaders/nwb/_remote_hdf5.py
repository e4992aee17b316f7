"""Open a remote HDF5 file over HTTP range requests (remfile), in as few round trips as it can.

remfile fetches what h5py asks for, one read at a time. On a wide-area link each of those
is a round trip, so two things are fetched ahead of it, several ranges at once, and handed
to remfile through its chunk cache: the file's first and last bytes when it is opened
(superblock, root group, most metadata), and the stored bytes of the datasets a reader is
about to read (:meth:`RemoteHDF5.prefetch`).

h5py runs one call at a time in a process (its global lock), so many threads reading many
files at once mostly wake each other up: an open file is read by at most
:data:`H5_SLOTS` threads at once (the others wait before opening it, once its edges are
fetched), and a prefetch gives its slot up while it waits on the network.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import h5py
import requests

from spikelab._optional import import_optional
from spikelab.exceptions import RangeNotSupportedError, StreamingError
from spikelab.http import (
    RETRY_STATUSES,
    TRANSIENT_ERRORS,
    IncompleteBodyError,
    RetryPolicy,
    attempts_of,
    call_with_retries,
    new_session,
    redact,
)
from spikelab.loaders.nwb._hdf5_direct import stored_chunks

# remfile's unit of reading and caching: bigger than its default (100 KiB), so the metadata
# of a Units table written after a large ElectricalSeries tends to come in one round trip.
CHUNK_BYTES = 256 * 1024
HEAD_BYTES = CHUNK_BYTES  # fetched from the file's start when it is opened (superblock ...)
TAIL_BYTES = 2 * CHUNK_BYTES  # and from its end, where h5py leaves later metadata
PART_BYTES = 8 * 1024 * 1024  # a longer range is fetched in parts of this size, in parallel
MAX_PARALLEL_REQUESTS = 8
RANGE_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 0.25  # before the second attempt; doubles each time


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


H5_SLOTS = 2 * _usable_cores()  # threads of a process inside h5py calls on remote files at once
_H5 = threading.BoundedSemaphore(H5_SLOTS)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass
class TransferStats:
    """Bytes a streamed read cost (body bytes the servers announced, in every answer)."""

    bytes_read: int = 0


def is_url(location: object) -> bool:
    """Tell whether ``location`` is an ``http(s)://`` URL."""
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def _get_range(
    session: requests.Session,
    url: str,
    byte_range: str,
    *,
    timeout_seconds: float,
    policy: RetryPolicy,
) -> tuple[int, int, bytes]:
    """GET ``Range: bytes=<byte_range>``; return the first offset, the file size, the bytes.

    The session retries 429, 5xx and failed connections; a connection dropped while the
    body is read, or a body cut short, is asked for again here, with the same policy.

    Raises
    ------
    RangeNotSupportedError
        Any other answer but 206 with a ``Content-Range``. The body of such an answer
        (maybe the whole file) is never read: remfile would treat it as an error and
        download the file again and again, so a server must pass this check first.
    StreamingError
        Still failing after ``policy.attempts`` attempts.
    """
    try:
        return call_with_retries(
            partial(_get_range_once, session, url, byte_range, timeout_seconds), policy
        )
    except TRANSIENT_ERRORS as error:
        raise StreamingError(
            f"{redact(url)}: bytes {byte_range} failed {policy.attempts} times ({error})"
        ) from error


def _get_range_once(
    session: requests.Session, url: str, byte_range: str, timeout_seconds: float
) -> tuple[int, int, bytes]:
    with session.get(
        url, headers={"Range": f"bytes={byte_range}"}, stream=True, timeout=timeout_seconds
    ) as response:
        if response.status_code in RETRY_STATUSES:  # the session's retries are spent
            raise StreamingError(
                f"{redact(url)}: bytes {byte_range} failed {attempts_of(response)} times "
                f"(HTTP {response.status_code})",
                status=response.status_code,
            )
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if response.status_code != 206 or match is None:
            raise RangeNotSupportedError(
                f"{redact(url)} answered HTTP {response.status_code} to a Range request; "
                "it cannot be streamed (download it instead)",
                status=response.status_code,
            )
        data = response.raw.read(decode_content=True)
    first, last, size = (int(group) for group in match.groups())
    if len(data) != last - first + 1:
        raise IncompleteBodyError(f"{len(data)} of {last - first + 1} bytes arrived")
    return first, size, data


def _chunk_index(key: str) -> int:
    """The chunk a remfile cache key names (``<url>|<chunk size>|<index>``)."""
    return int(key.rsplit("|", 1)[1])


class _ChunkCache:
    """remfile's chunk cache (its ``disk_cache``), filled ahead of remfile's own reads.

    A prefetched chunk is handed over once, on remfile's first look-up (remfile keeps it
    from then on); remfile reports its own fetches here, which go on to the disk cache
    when there is one.
    """

    def __init__(self, url: str, size: int, disk: Any | None) -> None:
        self.size = size
        self._url = url
        self._chunks: dict[int, bytes] = {}
        self._remfile_has: set[int] = set()
        self._disk = disk

    def get(self, key: str) -> bytes | None:
        index = _chunk_index(key)
        chunk = self._chunks.pop(index, None)
        if chunk is None and self._disk is not None:
            chunk = self._disk.get(key)
        if chunk is not None:
            self._remfile_has.add(index)
        return chunk

    def set(self, key: str, value: bytes) -> None:
        self._remfile_has.add(_chunk_index(key))  # remfile fetched it itself
        if self._disk is not None:
            self._disk.set(key, value)

    def has(self, index: int) -> bool:
        if index in self._chunks or index in self._remfile_has:
            return True
        key = f"{self._url}|{CHUNK_BYTES}|{index}"  # remfile's key for the chunk
        return self._disk is not None and self._disk.get(key) is not None

    def add(self, start: int, data: bytes) -> None:
        """Keep the whole chunks in ``data``, the bytes of the file from ``start`` on."""
        first = -(-start // CHUNK_BYTES)  # the first chunk that begins inside data
        end = start + len(data)
        for index in range(first, (end - 1) // CHUNK_BYTES + 1):
            begin = index * CHUNK_BYTES
            stop = min(begin + CHUNK_BYTES, self.size)
            if stop <= end:  # the chunk is complete (the last one may be short)
                self._chunks[index] = data[begin - start : stop - start]


def _chunk_spans(ranges: Iterable[tuple[int, int]], cache: _ChunkCache) -> list[tuple[int, int]]:
    """Chunk-aligned ``(first chunk, last chunk)`` spans covering ``(offset, length)``s.

    Chunks already cached are left out; neighbouring spans are merged, then split into
    parts of at most ``PART_BYTES`` so they can be fetched in parallel.
    """
    wanted = sorted(
        {
            index
            for offset, length in ranges
            if length > 0
            for index in range(offset // CHUNK_BYTES, (offset + length - 1) // CHUNK_BYTES + 1)
            if not cache.has(index)
        }
    )
    spans: list[tuple[int, int]] = []
    per_part = PART_BYTES // CHUNK_BYTES
    for index in wanted:
        if spans and index == spans[-1][1] + 1 and index - spans[-1][0] < per_part:
            spans[-1] = (spans[-1][0], index)
        else:
            spans.append((index, index))
    return spans


def stored_ranges(dataset: h5py.Dataset) -> list[tuple[int, int]]:
    """Where a dataset's bytes lie in its file: ``(offset, length)`` of each stored piece.

    Empty for a dataset whose data lives in its object header (compact layout) or that
    has none yet.
    """
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        return [] if offset is None else [(offset, dataset.id.get_storage_size())]
    return [(chunk.byte_offset, chunk.size) for chunk in stored_chunks(dataset)]


@dataclass
class RemoteHDF5:
    """An open remote HDF5 file and what reading it has cost."""

    handle: h5py.File
    stats: TransferStats
    url: str
    _fetch: Callable[[str], tuple[int, int, bytes]]
    _cache: _ChunkCache
    _pool: ThreadPoolExecutor

    def prefetch(self, datasets: Iterable[h5py.Dataset]) -> None:
        """Fetch the stored bytes of ``datasets`` now, in parallel range requests.

        Reading the datasets afterwards costs no further request for their data (HDF5
        metadata such as a variable-length string's heap may still need one).
        """
        ranges = [piece for dataset in datasets for piece in stored_ranges(dataset)]
        spans = _chunk_spans(ranges, self._cache)
        if not spans:
            return

        def fetch(span: tuple[int, int]) -> None:
            first = span[0] * CHUNK_BYTES
            last = min((span[1] + 1) * CHUNK_BYTES, self._cache.size) - 1
            start, _, data = self._fetch(f"{first}-{last}")
            self._cache.add(start, data)

        _H5.release()  # the network wait leaves h5py to other threads
        try:
            list(self._pool.map(fetch, spans))
        finally:
            _H5.acquire()


def _fetch_edges(
    fetch: Callable[[str], tuple[int, int, bytes]], size: int | None, pool: ThreadPoolExecutor
) -> tuple[int, list[tuple[int, bytes]]]:
    """Fetch a file's first and last bytes; return its size and ``(offset, bytes)`` pieces.

    With the size known both ranges go out at once; otherwise the head's answer tells the
    size first. The tail starts on a chunk boundary, so all of it can be cached.
    """

    def tail_range(total: int, head_end: int) -> str | None:
        start = max(head_end, (total - TAIL_BYTES) // CHUNK_BYTES * CHUNK_BYTES)
        return f"{start}-{total - 1}" if start < total else None

    if size is None:
        start, size, data = fetch(f"0-{HEAD_BYTES - 1}")
        pieces = [(start, data)]
        if (tail := tail_range(size, len(data))) is not None:
            tail_start, _, tail_data = fetch(tail)
            pieces.append((tail_start, tail_data))
        return size, pieces
    ranges = [f"0-{max(min(HEAD_BYTES, size), 1) - 1}"]
    if (tail := tail_range(size, HEAD_BYTES)) is not None:
        ranges.append(tail)
    answers = list(pool.map(fetch, ranges))
    return answers[0][1], [(start, data) for start, _, data in answers]


@contextmanager
def open_remote_hdf5(
    url: str,
    *,
    size_bytes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout_seconds: float = 30.0,
) -> Iterator[RemoteHDF5]:
    """Open ``url`` as a read-only h5py file whose reads become HTTP range requests.

    The file's first ``HEAD_BYTES`` and last ``TAIL_BYTES`` are fetched first (in parallel
    when ``size_bytes`` is given); that also checks that the server honours Range.

    Parameters
    ----------
    url : str
        An ``http(s)://`` URL of an HDF5 file on a server that honours Range.
    size_bytes : int | None, default: None
        The file's size, when known (it saves a round trip).
    cache_dir : str or PathLike or None, default: None
        remfile's disk cache of fetched chunks (shared by later opens of the same URL).
    timeout_seconds : float, default: 30.0
        Timeout of each of spikelab's own requests.

    Yields
    ------
    RemoteHDF5
        The h5py file, the :class:`TransferStats` it has cost so far, and ``prefetch``.

    Raises
    ------
    RangeNotSupportedError
        The server does not honour Range.
    StreamingError
        The bytes are not a readable HDF5 file.
    """
    remfile = import_optional("remfile", "nwb")
    stats = TransferStats()

    counting = threading.Lock()  # responses arrive on several threads at once

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with counting:
            stats.bytes_read += int(response.headers.get("Content-Length", 0))

    disk = remfile.DiskCache(str(cache_dir)) if cache_dir is not None else None
    policy = RetryPolicy(RANGE_ATTEMPTS, RETRY_BACKOFF_SECONDS)
    with (
        new_session(policy, pool_size=MAX_PARALLEL_REQUESTS) as session,
        ThreadPoolExecutor(MAX_PARALLEL_REQUESTS) as pool,
    ):
        session.hooks["response"].append(count)
        fetch = partial(_get_range, session, url, timeout_seconds=timeout_seconds, policy=policy)
        size, edges = _fetch_edges(fetch, size_bytes, pool)
        cache = _ChunkCache(url, size, disk)
        for start, data in edges:
            cache.add(start, data)
        remote = remfile.File(url, disk_cache=cache, _size=cache.size, _min_chunk_size=CHUNK_BYTES)
        remote.session.hooks["response"].append(count)
        try:
            with _H5:
                try:
                    handle = h5py.File(remote, "r")
                except OSError as error:
                    raise StreamingError(
                        f"{redact(url)} is not a readable NWB/HDF5 file (truncated or "
                        f"corrupt?): {error}"
                    ) from error
                with handle:
                    yield RemoteHDF5(handle, stats, url, fetch, cache, pool)
        finally:
            remote.close()
