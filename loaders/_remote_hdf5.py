"""Open a remote HDF5 file over HTTP range requests (remfile), counting the bytes it reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h5py
import requests

from spikelab._optional import import_optional
from spikelab.exceptions import RemoteError


class StreamingError(RemoteError):
    """A remote file could not be streamed: no Range support, or unreadable HDF5 bytes."""


class RangeNotSupportedError(StreamingError):
    """The server does not answer HTTP Range requests with 206, so it cannot be streamed."""


@dataclass
class TransferStats:
    """Bytes and requests a streamed read cost."""

    bytes_read: int = 0
    requests: int = 0


def is_url(location: object) -> bool:
    """Tell whether ``location`` is an ``http(s)://`` URL."""
    return isinstance(location, str) and location.startswith(("http://", "https://"))


def shown(url: str) -> str:
    """The URL without its query (presigned URLs carry credentials there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def remote_size(url: str, session: requests.Session, *, timeout_seconds: float = 30.0) -> int:
    """Check that ``url`` answers a small Range request with 206; return the file size.

    remfile treats a 200 carrying the whole body as an error and retries, downloading the
    file each time: this probe keeps it away from such servers.

    Raises
    ------
    RangeNotSupportedError
        Any answer but 206 with a ``Content-Range`` that gives the size.
    """
    with session.get(
        url, headers={"Range": "bytes=0-1023"}, stream=True, timeout=timeout_seconds
    ) as response:  # streamed: a server that ignores Range never sends the whole file here
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if response.status_code != 206 or not total.isdigit():
            raise RangeNotSupportedError(
                f"{shown(url)} answered HTTP {response.status_code} to a Range request; "
                "it cannot be streamed (download it instead)",
                status=response.status_code,
            )
    return int(total)


@contextmanager
def open_remote_hdf5(
    url: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> Iterator[tuple[h5py.File, TransferStats]]:
    """Open ``url`` as a read-only h5py file whose reads become HTTP range requests.

    Parameters
    ----------
    url : str
        An ``http(s)://`` URL of an HDF5 file on a server that honours Range.
    cache_dir : str or PathLike or None, default: None
        remfile's disk cache of fetched chunks (shared by later opens of the same URL).

    Yields
    ------
    tuple
        The h5py file and the :class:`TransferStats` it has cost so far.

    Raises
    ------
    RangeNotSupportedError
        The server does not honour Range.
    StreamingError
        The bytes are not a readable HDF5 file.
    """
    remfile = import_optional("remfile", "nwb")
    stats = TransferStats()

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        stats.requests += 1
        stats.bytes_read += int(response.headers.get("Content-Length", 0))

    with requests.Session() as probe:
        probe.hooks["response"].append(count)
        size = remote_size(url, probe)
    remote = remfile.File(
        url,
        disk_cache=remfile.DiskCache(str(cache_dir)) if cache_dir is not None else None,
        _size=size,
    )
    remote.session.hooks["response"].append(count)
    try:
        try:
            handle = h5py.File(remote, "r")
        except OSError as error:
            raise StreamingError(
                f"{shown(url)} is not a readable NWB/HDF5 file (truncated or corrupt?): {error}"
            ) from error
        with handle:
            yield handle, stats
    finally:
        remote.close()
