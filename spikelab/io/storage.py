"""Put and get whole files on a local folder or any pyarrow filesystem URL (``s3://`` ...).

Local files are written under a temporary name beside the destination and renamed into
place. Object stores make a PUT visible only once it is complete, so there the object is
written directly: in both cases a crash never leaves a partial file under the final name.
"""

from __future__ import annotations

import functools
import io
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pyarrow import fs

from spikelab.io.atomic import STALE_AFTER_SECONDS, atomic_write, remove_stale_temporaries

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Tell whether ``location`` is a URL (``s3://``, ``gs://`` ...) rather than a local path."""
    return "://" in str(location) and not str(location).startswith("file://")


def join(root: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts under ``root`` with ``/``, for local paths and URLs alike."""
    base = str(root).rstrip("/")
    return "/".join([base, *(part.strip("/") for part in parts)])


def _filesystem(location: str) -> tuple[fs.FileSystem, str]:
    """The filesystem of a URL and the path within it."""
    scheme, _, path = location.partition("://")
    if scheme != "s3" or "?" in path:
        return fs.FileSystem.from_uri(location)  # type: ignore[no-any-return]
    aws = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    return _bucket_filesystem(path.split("/", 1)[0], aws), path


@functools.cache
def _bucket_filesystem(bucket: str, aws: tuple[tuple[str, str], ...]) -> fs.FileSystem:
    """One S3 filesystem per bucket and AWS environment (``aws``: the ``AWS_*`` variables).

    Building one looks up the bucket's region (a request); a small write through it is one
    PUT, not a multipart upload of three requests (``allow_delayed_open``).
    """
    filesystem, _ = fs.FileSystem.from_uri(f"s3://{bucket}?allow_delayed_open=true")
    return filesystem


@contextmanager
def open_output(destination: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open ``destination`` for writing; it appears, whole, only when the block succeeds.

    A local file is written under a temporary name; an object is sent once the block
    has written all of it (an object store's stream would publish a part on error).
    """
    location = str(destination)
    if not is_remote(location):
        with atomic_write(location) as handle:
            yield handle
        return
    buffer = io.BytesIO()
    yield buffer
    put_bytes(location, buffer.getbuffer())


def put_bytes(destination: str | os.PathLike[str], data: bytes | memoryview) -> None:
    """Write ``data`` as the whole content of ``destination``, atomically."""
    location = str(destination)
    if not is_remote(location):
        with atomic_write(location) as handle:
            handle.write(data)
        return
    filesystem, path = _filesystem(location)  # object stores need no parent folders
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def get_bytes(location: str | os.PathLike[str]) -> bytes:
    """Read a whole file; FileNotFoundError when it is not there."""
    text = str(location)
    if not is_remote(text):
        return Path(text).read_bytes()
    filesystem, path = _filesystem(text)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        raise FileNotFoundError(f"no such file: {text}")
    with filesystem.open_input_stream(path) as stream:
        return bytes(stream.read())


def read_parquet(location: str | os.PathLike[str], columns: Sequence[str]) -> pa.Table:
    """The named columns of a Parquet file; those the file does not have are left out."""
    import pyarrow.parquet as pq

    text = str(location)
    if not is_remote(text):
        return _read_columns(pq.ParquetFile(text), columns)
    filesystem, path = _filesystem(text)
    with filesystem.open_input_file(path) as handle:
        return _read_columns(pq.ParquetFile(handle, pre_buffer=True), columns)


def _read_columns(parquet: pq.ParquetFile, columns: Sequence[str]) -> pa.Table:
    names = set(parquet.schema_arrow.names)
    return parquet.read(columns=[name for name in columns if name in names])


def exists(location: str | os.PathLike[str]) -> bool:
    """Tell whether a file exists."""
    text = str(location)
    if not is_remote(text):
        return Path(text).is_file()
    filesystem, path = _filesystem(text)
    return bool(filesystem.get_file_info(path).type == fs.FileType.File)


def remove(location: str | os.PathLike[str]) -> None:
    """Delete a file if it is there (nothing happens when it is not)."""
    text = str(location)
    if not is_remote(text):
        Path(text).unlink(missing_ok=True)
        return
    filesystem, path = _filesystem(text)
    if filesystem.get_file_info(path).type == fs.FileType.File:
        filesystem.delete_file(path)


def remove_leftovers(
    root: str | os.PathLike[str], *, older_than_seconds: float = STALE_AFTER_SECONDS
) -> list[str]:
    """Remove stale temporary files that killed writers left under a local ``root``.

    See :func:`spikelab.io.atomic.remove_stale_temporaries`. Object stores publish whole
    objects only, so a URL has nothing to clean.

    Returns
    -------
    list of str
        The files removed.
    """
    if is_remote(root):
        return []
    return [str(p) for p in remove_stale_temporaries(root, older_than_seconds=older_than_seconds)]


def files_older_than(
    root: str | os.PathLike[str], suffix: str, older_than_seconds: float
) -> list[str]:
    """The files below ``root`` ending with ``suffix`` last written over that long ago."""
    cutoff = time.time() - older_than_seconds
    return [location for location in list_files(root, suffix) if _modified(location) < cutoff]


def _modified(location: str) -> float:
    """When a file was last written (seconds since the epoch); infinity once it is gone."""
    if not is_remote(location):
        try:
            return Path(location).stat().st_mtime
        except FileNotFoundError:
            return math.inf
    filesystem, path = _filesystem(location)
    modified = filesystem.get_file_info(path).mtime
    return math.inf if modified is None else modified.timestamp()


def list_files(root: str | os.PathLike[str], suffix: str) -> list[str]:
    """Every file below ``root`` whose name ends with ``suffix``, sorted; [] if none."""
    text = str(root)
    if not is_remote(text):
        base = Path(text)
        return (
            sorted(str(p) for p in base.rglob(f"*{suffix}") if p.is_file()) if base.is_dir() else []
        )
    filesystem, path = _filesystem(text)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return []
    scheme = text.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    return sorted(
        f"{scheme}://{info.path}"
        for info in infos
        if info.type == fs.FileType.File and info.path.endswith(suffix)
    )
