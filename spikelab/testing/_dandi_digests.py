"""The DANDI archive's digests of a blob (``dandi:dandi-etag`` and sha256), as an oracle.

The part size, part limit and read size come in as a :class:`DigestSettings` value at each
call, so the stand-in can read its module-level knobs when a digest is asked for.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DigestSettings:
    """How a blob is cut up: S3 multipart part size and limit, and the read size."""

    part_size: int
    max_parts: int
    chunk_size: int


def etag_part_size(size: int, settings: DigestSettings) -> int:
    """Part size of the archive's S3 multipart upload for a blob of ``size`` bytes."""
    part_size = settings.part_size
    if math.ceil(size / part_size) >= settings.max_parts:
        part_size = math.ceil(size / settings.max_parts)
    return part_size


def iter_chunks(
    content: bytes | Path, chunk_size: int, start: int = 0, length: int | None = None
) -> Iterator[bytes]:
    """Yield ``content[start:start + length]`` in pieces of at most ``chunk_size`` bytes."""
    if isinstance(content, Path):
        with content.open("rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                piece = handle.read(chunk_size if remaining is None else min(chunk_size, remaining))
                if not piece:
                    return
                if remaining is not None:
                    remaining -= len(piece)
                yield piece
    else:
        view = memoryview(content)
        end = len(content) if length is None else min(len(content), start + length)
        for offset in range(start, end, chunk_size):
            yield bytes(view[offset : min(end, offset + chunk_size)])


def compute_etag(
    content: bytes | Path,
    settings: DigestSettings,
    feed: Callable[[bytes], object] | None = None,
) -> str:
    """Return the ``dandi-etag`` of the content, handing each chunk read to ``feed`` too."""
    size = content.stat().st_size if isinstance(content, Path) else len(content)
    part_size = etag_part_size(size, settings) if size else 0
    part_digests: list[bytes] = []
    part = hashlib.md5()
    filled = 0
    for chunk in iter_chunks(content, settings.chunk_size):
        if feed is not None:
            feed(chunk)
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
    return f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"


def compute_digests(content: bytes | Path, settings: DigestSettings) -> tuple[str, str]:
    """Return ``(dandi-etag, sha256 hex)`` from one pass over the content."""
    sha = hashlib.sha256()
    etag = compute_etag(content, settings, sha.update)
    return etag, sha.hexdigest()
