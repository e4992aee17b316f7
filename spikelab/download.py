"""Verified, resumable downloads: a partial file beside the destination, renamed once checked.

:func:`download_verified` streams to ``<destination>.partial``, hashing as the bytes
arrive, resumes a broken transfer with a Range request, and checks size and digests
(:mod:`spikelab.digests`) before the rename; bytes that do not match are never kept.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests
from tqdm import tqdm

from spikelab.digests import HASH_READ_BYTES, Check, Hasher
from spikelab.exceptions import DigestMismatchError, HostUnreachableError, RemoteError
from spikelab.http import TRANSIENT_ERRORS, IncompleteBodyError, RetryPolicy, unreachable
from spikelab.io.atomic import contained, older_than

CHUNK_BYTES = 1024 * 1024  # largest network read of a download; each returns what has arrived


class ByteSource(Protocol):
    """Where a download's bytes come from.

    ``open(offset)`` is a context manager giving the offset the answer starts at (0 when
    the server ignored the request to start at ``offset``) and the answer's blocks.
    ``transient`` lists the errors of this source that a new ``open`` may overcome.
    """

    name: str
    transient: tuple[type[BaseException], ...]

    def open(self, offset: int) -> AbstractContextManager[tuple[int, Iterable[bytes]]]:
        """Start reading at ``offset``: yield the offset served and the blocks."""


class HttpSource:
    """A download over HTTP: ``send(headers)`` returns the streamed answer (2xx, else raises).

    Parameters
    ----------
    name : str
        What messages call the download (a file name).
    send : callable
        Sends the GET with the given headers (a ``Range`` when resuming).
    """

    transient = TRANSIENT_ERRORS

    def __init__(self, name: str, send: Callable[[Mapping[str, str]], requests.Response]):
        self.name = name
        self._send = send

    @contextmanager
    def open(self, offset: int) -> Iterator[tuple[int, Iterable[bytes]]]:
        """Send the GET (with ``Range`` past 0); yield where the answer starts and its blocks."""
        response = self._send({"Range": f"bytes={offset}-"} if offset else {})
        with response:
            # read1 hands over whatever has arrived (up to CHUNK_BYTES): big reads keep
            # throughput up, and a broken connection loses nothing received
            blocks = iter(lambda: response.raw.read1(CHUNK_BYTES), b"")
            yield (offset if response.status_code == 206 else 0), blocks


class _Partial:
    """The partial file of one download and the marker naming what it was begun for."""

    def __init__(self, destination: Path, size: int | None, checks: Sequence[Check]) -> None:
        folder = destination.parent
        self.path = contained(folder, folder / f"{destination.name}.partial", "partial file")
        self.marker = contained(folder, folder / f"{destination.name}.partial.json", "marker")
        self.identity = {"size": size, "digests": [[c.name, c.expected] for c in checks]}
        self.checks = checks

    def _marker_matches(self) -> bool:
        try:
            return bool(json.loads(self.marker.read_text()) == self.identity)
        except (OSError, ValueError):  # missing, or torn by a kill
            return False

    def open(self, max_age_seconds: float | None) -> tuple[list[Hasher], int]:
        """Keep a resumable partial file; return hashers fed with its bytes and its length."""
        expired = max_age_seconds is not None and older_than(self.path, max_age_seconds)
        if expired or not self._marker_matches():
            self.path.unlink(missing_ok=True)
        self.marker.write_text(json.dumps(self.identity))
        hashers = self.new_hashers()
        have = 0
        if self.path.is_file():
            with self.path.open("rb") as handle:
                while block := handle.read(HASH_READ_BYTES):
                    for hasher in hashers:
                        hasher.update(block)
                    have += len(block)
        return hashers, have

    def new_hashers(self) -> list[Hasher]:
        return [check.new_hasher() for check in self.checks]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Limits:
    policy: RetryPolicy
    deadline: float  # monotonic
    timeout_seconds: float | None


def download_verified(
    source: ByteSource,
    destination: Path,
    *,
    size: int | None,
    checks: Sequence[Check] = (),
    policy: RetryPolicy | None = None,
    fresh_attempts: int = 2,
    timeout_seconds: float | None = None,
    partial_max_age_seconds: float | None = None,
    mismatch_hint: str = "",
) -> dict[str, str]:
    """Stream ``source`` to ``destination``; check size and digests before renaming into place.

    Bytes go to ``<destination>.partial`` (beside it, ``.partial.json`` names the size and
    digests it was begun for), hashed as they arrive. A broken transfer resumes where it
    broke; a partial file left by an earlier call is resumed only when begun for the same
    size and digests and not older than ``partial_max_age_seconds``. Bytes that do not
    match are deleted (with any older file at ``destination``) and never resumed; up to
    ``fresh_attempts`` complete downloads are tried, in case the transfer corrupted them.

    Parameters
    ----------
    source : ByteSource
        Where the bytes come from.
    destination : Path
        The file to create (its folder is created).
    size : int | None
        The published size; None reads until the source ends.
    checks : sequence of Check, default: ()
        Digests to compute, and to compare where ``expected`` is set.
    policy : RetryPolicy | None, default: None
        Tries and waits after a broken body (default: 5 tries).
    fresh_attempts : int, default: 2
        Complete downloads tried before a mismatch is an error.
    timeout_seconds : float | None, default: None
        Longest time the whole download may take.
    partial_max_age_seconds : float | None, default: None
        Age after which a partial file is started afresh (None: never).
    mismatch_hint : str, default: ""
        Appended to the mismatch error (what the user can do).

    Returns
    -------
    dict of str to str
        ``{check name: hex digest}`` of the file now at ``destination``.

    Raises
    ------
    DigestMismatchError
        Every complete download differed from the published size or a digest.
    RemoteError
        The transfer kept failing, or took longer than ``timeout_seconds``.
    HostUnreachableError
        The source's host does not resolve or refuses the connection (not retried).
    UnsafeRemoteDataError
        The partial file or its marker would resolve outside the destination's folder.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = _Partial(destination, size, checks)
    limits = _Limits(
        policy or RetryPolicy(),
        time.monotonic() + (math.inf if timeout_seconds is None else timeout_seconds),
        timeout_seconds,
    )
    problem = ""
    for _ in range(fresh_attempts):
        hashers, have = partial.open(partial_max_age_seconds)
        hashers, have = _transfer(source, partial, size, hashers, have, limits)
        digests = {c.name: h.hexdigest() for c, h in zip(checks, hashers, strict=True)}
        problem = _mismatch(have, size, checks, digests)
        if not problem:
            os.replace(partial.path, destination)
            partial.marker.unlink(missing_ok=True)
            return digests
        partial.discard()
        destination.unlink(missing_ok=True)
    again = ", also on a fresh second download" if fresh_attempts > 1 else ""
    raise DigestMismatchError(
        f"download of {source.name} is corrupt: {problem}{again}; nothing was kept{mismatch_hint}"
    )


def _transfer(
    source: ByteSource,
    partial: _Partial,
    size: int | None,
    hashers: list[Hasher],
    have: int,
    limits: _Limits,
) -> tuple[list[Hasher], int]:
    """Append the rest of the file to the partial file, resuming after broken bodies.

    Returns the hashers (new ones when the source started over) and the bytes on disk.
    """
    failures = 0
    progress = tqdm(
        total=size, initial=have, unit="B", unit_scale=True, desc=source.name, disable=None,
        leave=False,
    )  # fmt: skip
    with progress:
        while size is None or have < size:
            try:
                with source.open(have) as (start, blocks):
                    if start != have:  # the source ignored the offset: start over
                        have, hashers = 0, partial.new_hashers()
                    with partial.path.open("ab" if have else "wb") as out:
                        for block in blocks:
                            out.write(block)
                            for hasher in hashers:
                                hasher.update(block)
                            have += len(block)
                            progress.update(len(block))
                            _check_deadline(source.name, limits)
                if size is None:
                    break
                if have < size:
                    raise IncompleteBodyError(f"the body ended at byte {have} of {size}")
            except source.transient as error:
                why = unreachable(error)
                if why is not None:  # asking again at once will not help
                    raise HostUnreachableError(f"cannot download {source.name}: {why}") from None
                failures += 1
                if failures >= limits.policy.attempts:
                    raise RemoteError(
                        f"downloading {source.name} kept failing ({type(error).__name__}) "
                        f"after {failures} attempts at byte {have} of {size}"
                    ) from None
                limits.policy.wait(failures)
    return hashers, have


def _check_deadline(name: str, limits: _Limits) -> None:
    if time.monotonic() > limits.deadline:
        raise RemoteError(
            f"downloading {name} took longer than {limits.timeout_seconds:g} s; "
            "raise download_timeout_seconds"
        )


def _mismatch(
    have: int, size: int | None, checks: Sequence[Check], digests: Mapping[str, str]
) -> str:
    """Say how the downloaded bytes differ from what is published ("" when they do not)."""
    if size is not None and have != size:
        return f"{have} bytes arrived but {size} were announced"
    for check in checks:
        actual = digests[check.name]
        if check.expected is not None and actual != check.expected:
            return check.mismatch.format(name=check.name, actual=actual, expected=check.expected)
    return ""
