"""Digests of downloaded bytes: hashlib's, and the S3 multipart ETag DANDI publishes."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

HASH_READ_BYTES = 1024 * 1024  # local reads when hashing a file already on disk
ETAG_PART_SIZE = 64 * 1024 * 1024
ETAG_MAX_PARTS = 10_000


class Hasher(Protocol):
    """What a digest needs: ``hashlib``'s ``update`` and ``hexdigest``."""

    def update(self, data: bytes | memoryview, /) -> None:
        """Feed the next bytes."""

    def hexdigest(self) -> str:
        """Return the digest of everything fed so far."""


class EtagDigest:
    """Incremental S3 multipart ETag: MD5 of the parts' MD5s, then ``-<parts>``.

    Parameters
    ----------
    size : int
        The file's size; it sets the part size the way DANDI uploads (64 MiB, larger when
        the file would need more than 10,000 parts).
    part_size : int | None, default: None
        The part size, when known otherwise (an S3 object's first part).
    """

    def __init__(self, size: int, part_size: int | None = None) -> None:
        if part_size is None:
            parts = math.ceil(size / ETAG_PART_SIZE)
            part_size = (
                ETAG_PART_SIZE if parts < ETAG_MAX_PARTS else math.ceil(size / ETAG_MAX_PARTS)
            )
        self.part_size = part_size
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
        """Return the ETag of everything fed so far."""
        digests = self._digests + ([self._part.digest()] if self._in_part else [])
        return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


@dataclass(frozen=True)
class Check:
    """A digest the downloaded bytes must have; ``expected=None`` only computes it.

    ``mismatch`` words the failure, with ``{actual}`` and ``{expected}`` filled in.
    """

    name: str
    expected: str | None
    new_hasher: Callable[[], Hasher]
    mismatch: str = "{name} is {actual} but the archive publishes {expected}"


def file_digests(path: Path, checks: Sequence[Check]) -> dict[str, str]:
    """Hash a local file once for every check; return ``{check name: hex digest}``."""
    hashers = [check.new_hasher() for check in checks]
    with path.open("rb") as handle:
        while block := handle.read(HASH_READ_BYTES):
            for hasher in hashers:
                hasher.update(block)
    return {check.name: hasher.hexdigest() for check, hasher in zip(checks, hashers, strict=True)}
