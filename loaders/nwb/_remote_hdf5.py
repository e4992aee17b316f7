"""Open a remote HDF5 file over HTTP range requests, in as few round trips as it can.

h5py reads the file through :class:`RangeFile`, a file object whose bytes come from a cache
of ``CHUNK_BYTES`` chunks; what a read finds missing is fetched in one range request through
a :class:`~spikelab.loaders.nwb._ranges.RangeClient` (spikelab's session, its retry policy
and timeouts), so no other HTTP client with retries of its own takes part. On a wide-area
link each request is a round trip, so three things are fetched ahead of h5py, several
ranges at once: the file's first and last bytes when it is opened (superblock, root group,
most metadata), the stretch after the first read that misses in the middle, up to the
tail (a bounded guess at where the last-written objects lie, see :class:`_Fetcher`), and
the stored bytes of the datasets a reader is about to read (:meth:`RemoteHDF5.prefetch`).

h5py runs one call at a time in a process (its global lock), so many threads reading many
files at once mostly wake each other up: an open file is read by at most
:data:`H5_SLOTS` threads at once (the others wait before opening it, once its edges are
fetched), and a prefetch gives its slot up while it waits on the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from spikelab.cores import cpu_slots
from spikelab.exceptions import StreamingError
from spikelab.http import RetryPolicy, redact
from spikelab.io.atomic import atomic_write
from spikelab.loaders.nwb._hdf5_direct import stored_chunks
from spikelab.loaders.nwb._ranges import RangeClient

# The unit of reading and caching: a miss costs at least this much, so the metadata of a
# Units table written after a large ElectricalSeries tends to come in one round trip.
CHUNK_BYTES = 256 * 1024
HEAD_BYTES = CHUNK_BYTES  # fetched from the file's start when it is opened (superblock ...)
TAIL_BYTES = 2 * CHUNK_BYTES  # and from its end, where h5py leaves later metadata
PART_BYTES = 8 * 1024 * 1024  # a longer range is fetched in parts of this size, in parallel
GUESS_BYTES = 32 * 1024 * 1024  # the most a file's one guess fetches beyond a read (see _Fetcher)
MAX_PARALLEL_REQUESTS = 8
RANGE_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 0.25  # before the second attempt; doubles each time


H5_SLOTS = 2 * cpu_slots()  # threads of a process inside h5py calls on remote files at once
_H5 = threading.BoundedSemaphore(H5_SLOTS)

Fetch = Callable[[str], tuple[int, int, bytes]]  # "first-last" -> (first, file size, bytes)


def is_url(location: object) -> bool:
    """Tell whether ``location`` is an ``http(s)://`` URL."""
    return isinstance(location, str) and location.startswith(("http://", "https://"))


class _DiskChunks:
    """Fetched chunks kept in a folder for later opens of the same URL (``cache_dir``).

    Each chunk is one file named by a hash of the URL and its index, written under a
    temporary name and renamed, so a killed process never leaves a torn chunk behind.
    """

    def __init__(self, folder: Path, url: str) -> None:
        self._folder = folder
        self._url = url

    def _path(self, index: int) -> Path:
        name = hashlib.sha1(f"{self._url}|{CHUNK_BYTES}|{index}".encode()).hexdigest()
        return self._folder / name[:2] / name

    def get(self, index: int) -> bytes | None:
        try:
            return self._path(index).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, index: int, data: bytes | memoryview) -> None:
        with atomic_write(self._path(index)) as out:
            out.write(data)


class _ChunkCache:
    """The chunks of a remote file fetched so far (and, with a disk cache, earlier)."""

    def __init__(self, size: int, disk: _DiskChunks | None) -> None:
        self.size = size
        self._chunks: dict[int, bytes | memoryview] = {}
        self._disk = disk

    def get(self, index: int) -> bytes | memoryview | None:
        chunk = self._chunks.get(index)
        if chunk is None and self._disk is not None:
            chunk = self._disk.get(index)
            if chunk is not None:
                self._chunks[index] = chunk
        return chunk

    def has(self, index: int) -> bool:
        return self.get(index) is not None

    def cached_after(self, index: int) -> int:
        """The first chunk after ``index`` held in memory (the chunk count if none is)."""
        later = [cached for cached in list(self._chunks) if cached > index]  # others add
        return min(later, default=-(-self.size // CHUNK_BYTES))

    def add(self, start: int, data: bytes) -> None:
        """Keep the whole chunks in ``data``, the bytes of the file from ``start`` on."""
        view = memoryview(data)  # chunks are views of the answer: no copies
        first = -(-start // CHUNK_BYTES)  # the first chunk that begins inside data
        end = start + len(data)
        for index in range(first, (end - 1) // CHUNK_BYTES + 1):
            begin = index * CHUNK_BYTES
            stop = min(begin + CHUNK_BYTES, self.size)
            if stop <= end and index not in self._chunks:  # complete (the last may be short)
                chunk = view[begin - start : stop - start]
                self._chunks[index] = chunk
                if self._disk is not None:
                    self._disk.put(index, chunk)


def _spans_of(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted chunk indices as ``(first, last)`` spans of neighbours.

    Each span is at most ``PART_BYTES`` long, so the parts of a long stretch can be
    fetched in parallel.
    """
    spans: list[tuple[int, int]] = []
    per_part = PART_BYTES // CHUNK_BYTES
    for index in indices:
        if spans and index == spans[-1][1] + 1 and index - spans[-1][0] < per_part:
            spans[-1] = (spans[-1][0], index)
        else:
            spans.append((index, index))
    return spans


def _chunk_indices(ranges: Iterable[tuple[int, int]]) -> set[int]:
    """The chunks ``(offset, length)`` ranges touch."""
    return {
        index
        for offset, length in ranges
        if length > 0
        for index in range(offset // CHUNK_BYTES, (offset + length - 1) // CHUNK_BYTES + 1)
    }


class _Fetcher:
    """Fetches byte ranges of one URL into its chunk cache, several at once when asked.

    The first read that misses in the file's middle (the edges fetched, h5py looking for
    metadata written after a large dataset) makes one guess: writers such as h5py put an
    object's header, its members and their data one after the other, and what is written
    last (the Units table, after the raw data) lies between that miss and the file's tail.
    When the stretch from the miss to the next cached chunk is at most ``GUESS_BYTES`` its
    fetch starts with the miss's, in the same round trip; the read goes on as soon as its
    own chunks are in, and a later read of a chunk still on its way waits for it. One
    guess per file bounds what a wrong one costs.
    """

    def __init__(self, fetch: Fetch, cache: _ChunkCache) -> None:
        self._fetch = fetch
        self.cache = cache
        self._pool: ThreadPoolExecutor | None = None
        self._guessed = False
        self._coming: dict[int, Future[None]] = {}  # chunk index -> the request bringing it
        self._lock = threading.Lock()

    def ranges(self, ranges: list[str]) -> list[tuple[int, int, bytes]]:
        """Fetch ``first-last`` ranges at once (the first in this thread); answers in order."""
        if len(ranges) == 1:
            return [self._fetch(ranges[0])]
        others = [self._submit(self._fetch, byte_range) for byte_range in ranges[1:]]
        try:
            first = self._fetch(ranges[0])
        finally:
            answers = [future.result() for future in others]
        return [first, *answers]

    def _submit(self, call: Callable[[str], Any], byte_range: str) -> Future[Any]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(MAX_PARALLEL_REQUESTS - 1)
        return self._pool.submit(call, byte_range)

    def _range(self, span: tuple[int, int]) -> str:
        first, last = span
        return f"{first * CHUNK_BYTES}-{min((last + 1) * CHUNK_BYTES, self.cache.size) - 1}"

    def _keep(self, byte_range: str) -> None:
        """Fetch one range into the cache (on a pool thread)."""
        start, _, data = self._fetch(byte_range)
        self.cache.add(start, data)

    def fetch(self, ranges: Iterable[tuple[int, int]], *, guess: bool = False) -> None:
        """Fetch the chunks ``(offset, length)`` ranges touch that are not cached yet.

        Chunks already on their way are waited for, not asked for again. With ``guess``
        (a read that missed), the file's one guess starts too (see the class).
        """
        with self._lock:
            wanted = sorted(i for i in _chunk_indices(ranges) if not self.cache.has(i))
            waits = {self._coming[i] for i in wanted if i in self._coming}
            spans = _spans_of([i for i in wanted if i not in self._coming])
            if guess and spans and not self._guessed:
                self._guessed = self._start_guess(spans[-1][1])
        if spans:
            for start, _, data in self.ranges([self._range(span) for span in spans]):
                self.cache.add(start, data)
        for future in waits:
            future.result()

    def _start_guess(self, last: int) -> bool:
        """Start fetching the chunks after ``last`` up to the next cached one, if few enough.

        Returns whether it did.
        """
        upto = self.cache.cached_after(last)
        if not 0 < (upto - last - 1) * CHUNK_BYTES <= GUESS_BYTES:
            return False
        # a disk cache may hold some of them already
        missing = [i for i in range(last + 1, upto) if not self.cache.has(i)]
        for span in _spans_of([i for i in missing if i not in self._coming]):
            future = self._submit(self._keep, self._range(span))
            for index in range(span[0], span[1] + 1):
                self._coming[index] = future
        return True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class RangeFile(io.RawIOBase):
    """A read-only file object over a remote file's chunks, for h5py's ``fileobj`` driver.

    A read copies from cached chunks; the chunks it finds missing are fetched first, the
    whole read in one request per stretch of neighbouring missing chunks. ``repr`` is the
    URL without its query, which is how h5py names the file in messages.
    """

    def __init__(self, fetcher: _Fetcher, url: str) -> None:
        super().__init__()
        self._fetcher = fetcher
        self._cache = fetcher.cache
        self._url = redact(url)
        self._position = 0

    def __repr__(self) -> str:
        return self._url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._cache.size}
        self._position = base[whence] + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        start = self._position
        count = max(0, min(len(target), self._cache.size - start))
        if count == 0:
            return 0
        first, last = start // CHUNK_BYTES, (start + count - 1) // CHUNK_BYTES
        if first == last and (chunk := self._cache.get(first)) is not None:  # most reads
            offset = start - first * CHUNK_BYTES
            target[:count] = chunk[offset : offset + count]
            self._position += count
            return count
        chunks = [self._cache.get(index) for index in range(first, last + 1)]
        if None in chunks:
            self._fetcher.fetch([(start, count)], guess=True)
            chunks = [self._cache.get(index) for index in range(first, last + 1)]
        done, offset = 0, start - first * CHUNK_BYTES
        for chunk in chunks:
            if chunk is None:  # pragma: no cover - fetched just above
                raise StreamingError(f"{self._url}: bytes at {start + done} went missing")
            piece = min(len(chunk) - offset, count - done)
            target[done : done + piece] = chunk[offset : offset + piece]
            done, offset = done + piece, 0
        self._position += done
        return done


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
    url: str
    _client: RangeClient
    _fetcher: _Fetcher

    @property
    def bytes_read(self) -> int:
        """Body bytes the server announced in every answer so far (what it sent)."""
        return self._client.bytes_read

    @property
    def cached_whole(self) -> bool:
        """Whether every byte of the file is already cached (a small file's edges hold it)."""
        cache = self._fetcher.cache
        return all(cache.has(index) for index in range(-(-cache.size // CHUNK_BYTES)))

    def prefetch(self, datasets: Iterable[h5py.Dataset]) -> None:
        """Fetch the stored bytes of ``datasets`` now, in parallel range requests.

        Reading the datasets afterwards costs no further request for their data (HDF5
        metadata such as a variable-length string's heap may still need one).
        """
        ranges = [piece for dataset in datasets for piece in stored_ranges(dataset)]
        _H5.release()  # the network wait leaves h5py to other threads
        try:
            self._fetcher.fetch(ranges)
        finally:
            _H5.acquire()


def _edge_ranges(size: int) -> list[str]:
    """The file's first ``HEAD_BYTES`` and its last ``TAIL_BYTES`` from a chunk boundary."""
    ranges = [f"0-{max(min(HEAD_BYTES, size), 1) - 1}"]
    start = max(HEAD_BYTES, (size - TAIL_BYTES) // CHUNK_BYTES * CHUNK_BYTES)
    if start < size:
        ranges.append(f"{start}-{size - 1}")
    return ranges


def _fetch_edges(
    fetcher: Callable[[list[str]], list[tuple[int, int, bytes]]], size: int | None
) -> tuple[int, list[tuple[int, bytes]]]:
    """Fetch a file's first and last bytes; return its size and ``(offset, bytes)`` pieces.

    With the size known both ranges go out at once; otherwise the head's answer tells the
    size first.
    """
    if size is None:
        start, size, data = fetcher([f"0-{HEAD_BYTES - 1}"])[0]
        tail = _edge_ranges(size)[1:]
        answers = [(start, size, data), *(fetcher(tail) if tail else [])]
    else:
        answers = fetcher(_edge_ranges(size))
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
    when ``size_bytes`` is given); that also checks that the server honours Range. Every
    request goes through one spikelab session, with ``timeout_seconds`` and its retries.

    Parameters
    ----------
    url : str
        An ``http(s)://`` URL of an HDF5 file on a server that honours Range.
    size_bytes : int | None, default: None
        The file's size, when known (it saves a round trip).
    cache_dir : str or PathLike or None, default: None
        A folder keeping the fetched chunks for later opens of the same URL; nothing is
        written to disk without it.
    timeout_seconds : float, default: 30.0
        Timeout of each request (to connect, and between bytes of an answer).

    Yields
    ------
    RemoteHDF5
        The h5py file, the bytes it has cost so far, and ``prefetch``.

    Raises
    ------
    RangeNotSupportedError
        The server does not honour Range.
    StreamingError
        The bytes are not a readable HDF5 file, or a request kept failing.
    """
    disk = _DiskChunks(Path(cache_dir), url) if cache_dir is not None else None
    policy = RetryPolicy(RANGE_ATTEMPTS, RETRY_BACKOFF_SECONDS)
    client = RangeClient(url, timeout_seconds=timeout_seconds, policy=policy)
    fetcher = _Fetcher(client.get, _ChunkCache(0, disk))
    try:
        size, edges = _fetch_edges(fetcher.ranges, size_bytes)
        fetcher.cache.size = size
        for start, data in edges:
            fetcher.cache.add(start, data)
        with _H5:
            try:
                handle = h5py.File(RangeFile(fetcher, url), "r")
            except OSError as error:
                raise StreamingError(
                    f"{redact(url)} is not a readable NWB/HDF5 file (truncated or "
                    f"corrupt?): {error}"
                ) from error
            with handle:
                yield RemoteHDF5(handle, url, client, fetcher)
    finally:
        fetcher.close()
