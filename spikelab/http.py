"""spikelab's one HTTP layer: sessions, the retry policy, URL redaction, verified downloads.

Every client of a remote service (the DANDI API and its blob store, remote HDF5 range reads,
the Brain-Wide Map table on S3) goes through here:

- :func:`new_session` mounts urllib3's :class:`~urllib3.util.Retry` built from a
  :class:`RetryPolicy`, so 429 and 5xx answers and connections that fail before an answer
  are retried inside each request, honouring ``Retry-After``, with jittered backoff; a
  host that cannot be reached (its name does not resolve, or it refuses the connection)
  fails at once (:func:`unreachable`, :func:`unreachable_host`);
- failures while a body is read (a dropped connection, a body shorter than announced)
  happen after urllib3 has handed the answer over, so :func:`call_with_retries` and
  :func:`download_verified` retry them with the same policy;
- :func:`redact` is how a URL appears in any message;
- :func:`download_verified` streams to a partial file beside the destination, resumes with
  a Range request, hashes while streaming and checks size and digests before renaming.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import posixpath
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, TypeVar
from urllib.parse import unquote, urlsplit

import requests
import urllib3
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util import Retry

from spikelab.exceptions import (
    DigestMismatchError,
    HostUnreachableError,
    RemoteError,
    UnsafeRemoteDataError,
)

USER_AGENT = "spikelab (https://github.com/spikelab)"
#: Answers worth asking again for.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: No wait between two attempts, asked for by the server or not, is longer.
MAX_DELAY_SECONDS = 60.0
CHUNK_BYTES = 1024 * 1024  # largest network read of a download; each returns what has arrived
HASH_READ_BYTES = 1024 * 1024  # local reads when hashing a file already on disk
ETAG_PART_SIZE = 64 * 1024 * 1024
ETAG_MAX_PARTS = 10_000

T = TypeVar("T")


class IncompleteBodyError(ConnectionError):
    """A response body ended before the length its headers announced."""


#: Failures that may pass when the same request is sent again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,  # includes a connect timeout
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,  # a connection dropped while the body is read
    ConnectionError,  # the builtin (and IncompleteBodyError): resets that slipped through
)


def redact(url: str) -> str:
    """Return ``url`` without its query string, where presigned URLs carry credentials.

    Examples
    --------
    >>> redact("https://bucket.s3.amazonaws.com/blobs/abc?X-Amz-Signature=secret")
    'https://bucket.s3.amazonaws.com/blobs/abc'
    """
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_and_path(url: str) -> tuple[tuple[str, str, int | None], str] | None:
    """``((scheme, host, port), path)`` with dot segments resolved; None when unparsable."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port out of range
        return None
    scheme = parts.scheme.lower()
    origin = (scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme))
    # a server may decode %2e%2e before it resolves dot segments: judge the decoded path
    path = posixpath.normpath("/" + unquote(parts.path))
    return origin, "/" if path == "//" else path


def is_under(url: str, base: str) -> bool:
    """Tell whether ``url`` lies under ``base``: same origin, a path at or below base's.

    The scheme, host and port must agree (default ports included) and the path, with
    ``.``/``..`` segments resolved (also percent-encoded ones), must be ``base``'s path or
    lie below it, segment by segment: ``/api-other`` is not under ``/api``.

    Examples
    --------
    >>> is_under("https://h.org/api/assets/?page=2", "https://h.org/api")
    True
    >>> is_under("https://h.org/api/../admin/", "https://h.org/api")
    False
    """
    target, home = _origin_and_path(url), _origin_and_path(base)
    if target is None or home is None or target[0] != home[0]:
        return False
    path, root = target[1], home[1].rstrip("/")
    return path == root or path.startswith(root + "/") or root == ""


class ScopedAuthSession(requests.Session):
    """A ``requests.Session`` whose ``Authorization`` header stays under ``auth_scope``.

    requests keeps the header when a redirect stays on the same host; this session drops
    it whenever a redirect leaves ``auth_scope`` (another path of the same host too).
    With ``auth_scope`` None it behaves as ``requests.Session``.
    """

    def __init__(self, auth_scope: str | None = None) -> None:
        super().__init__()
        self.auth_scope = auth_scope

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """Drop the header as requests does, and also when the redirect leaves the scope."""
        super().rebuild_auth(prepared_request, response)
        url = prepared_request.url or ""
        if self.auth_scope is not None and not is_under(url, self.auth_scope):
            prepared_request.headers.pop("Authorization", None)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it wraps: causes, contexts, a MaxRetryError's reason, wrapped args."""
    seen: set[int] = set()
    stack = [error]
    while stack and len(seen) < 32:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [arg for arg in current.args if isinstance(arg, BaseException)]
        stack.extend(item for item in linked if isinstance(item, BaseException))


def unreachable(error: BaseException) -> str | None:
    """Say why a host cannot be reached at all, or None for any other failure.

    A name that does not resolve (offline, or a wrong name) and a refused connection
    (nothing listens) are not worth retrying soon; resets, timeouts and 5xx answers are.

    Examples
    --------
    >>> unreachable(ConnectionRefusedError(111, "Connection refused"))[:40]
    'the connection was refused (Connection r'
    """
    causes = list(_causes(error))
    if any(isinstance(c, socket.gaierror | urllib3.exceptions.NameResolutionError) for c in causes):
        detail = next((c.strerror for c in causes if isinstance(c, socket.gaierror)), None)
        return (
            f"its name does not resolve ({detail or 'no address'}); check the host name and "
            "the network connection"
        )
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return (
                f"the connection was refused ({cause.strerror or cause}); check the address "
                "and port, and that the server runs"
            )
    return None


def unreachable_host(url: str, error: BaseException) -> str | None:
    """``cannot reach <host>: <why>`` when ``error`` means the host is unreachable, else None."""
    why = unreachable(error)
    if why is None:
        return None
    parts = urlsplit(url)
    return f"cannot reach {parts.netloc or url}: {why}"


class _Retry(Retry):
    """urllib3's Retry with spikelab's waits.

    The first retry already waits (``backoff_factor`` seconds, doubling after, each
    multiplied by a random factor in [0.5, 1.5]); ``Retry-After: 0`` means no wait; no
    wait exceeds :data:`MAX_DELAY_SECONDS`. A host that cannot be reached (its name does
    not resolve, or it refuses the connection) is not tried again: see :func:`unreachable`.
    """

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: urllib3.BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: urllib3.connectionpool.ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        """Count one failed try, giving up at once when the host is unreachable."""
        if error is not None and unreachable(error) is not None:
            raise urllib3.exceptions.MaxRetryError(_pool, url, error) from error  # type: ignore[arg-type]
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        delay = self.backoff_factor * 2 ** max(len(self.history) - 1, 0)
        return min(delay * random.uniform(0.5, 1.5), MAX_DELAY_SECONDS)

    def sleep_for_retry(self, response: urllib3.BaseHTTPResponse) -> bool:
        retry_after = self.get_retry_after(response)
        if retry_after is None:
            return False
        time.sleep(min(retry_after, MAX_DELAY_SECONDS))
        return True


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a request is tried.

    Parameters
    ----------
    attempts : int, default: 5
        Tries per request (and per broken body) before giving up.
    backoff_seconds : float, default: 0.5
        Wait before the second try; it doubles each time, with jitter, unless the server
        sends ``Retry-After``.
    """

    attempts: int = 5
    backoff_seconds: float = 0.5

    def urllib3_retry(self) -> Retry:
        """The urllib3 ``Retry`` that retries statuses and failed connections of one request."""
        return _Retry(
            total=self.attempts - 1,
            redirect=False,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD"}),
            backoff_factor=self.backoff_seconds,
            raise_on_status=False,  # the last answer comes back; callers word the error
            raise_on_redirect=False,
            respect_retry_after_header=True,
        )

    def wait(self, attempt: int) -> None:
        """Sleep before try ``attempt + 1`` after a broken body: a jittered doubling delay."""
        delay = self.backoff_seconds * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        time.sleep(min(delay, MAX_DELAY_SECONDS))


def new_session(
    policy: RetryPolicy | None = None, *, pool_size: int = 10, auth_scope: str | None = None
) -> requests.Session:
    """A ``requests.Session`` whose every request follows ``policy`` (default: 5 tries).

    Parameters
    ----------
    policy : RetryPolicy | None, default: None
        Retries of 429/5xx answers and failed connections.
    pool_size : int, default: 10
        Connections kept per host (requests sent from several threads at once).
    auth_scope : str | None, default: None
        A URL prefix: an ``Authorization`` header never follows a redirect to a URL
        outside it (see :class:`ScopedAuthSession`).
    """
    session = ScopedAuthSession(auth_scope)
    adapter = HTTPAdapter(
        max_retries=(policy or RetryPolicy()).urllib3_retry(),
        pool_connections=pool_size,
        pool_maxsize=pool_size,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def attempts_of(response: requests.Response) -> int:
    """How many tries the session's retries spent on the request ``response`` answers."""
    retries = getattr(response.raw, "retries", None)
    return len(retries.history) + 1 if isinstance(retries, Retry) else 1


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    transient: tuple[type[BaseException], ...] = TRANSIENT_ERRORS,
) -> T:
    """Return ``call()``, calling again after a transient failure (the last one propagates).

    For failures the session cannot retry itself: those raised while a body is read. An
    unreachable host (see :func:`unreachable`) is not called again.
    """
    for attempt in range(1, policy.attempts):
        try:
            return call()
        except transient as error:
            if unreachable(error) is not None:
                raise
            policy.wait(attempt)
    return call()


# ------------------------------------------------------------------------ digests


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


# ------------------------------------------------------------------------ downloads


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


def older_than(path: Path, max_age_seconds: float) -> bool:
    """Tell whether ``path`` was last modified more than ``max_age_seconds`` ago."""
    try:
        return time.time() - path.lstat().st_mtime > max_age_seconds
    except FileNotFoundError:  # removed meanwhile by a concurrent run
        return False


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
