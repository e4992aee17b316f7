"""spikelab's one HTTP layer: sessions, the retry policy, URL redaction, reachability.

Every client of a remote service (the DANDI API and its blob store, remote HDF5 range reads,
the Brain-Wide Map table on S3) sends its requests through a session from
:func:`new_session`. Each kind of failure is retried by exactly one layer:

1. **Within a request** (the session): urllib3's :class:`~urllib3.util.Retry`, built from a
   :class:`RetryPolicy`, retries 429 and 5xx answers and connections that fail before an
   answer, honouring ``Retry-After``, with jittered backoff. A host that cannot be reached
   (its name does not resolve, or it refuses the connection) fails at once
   (:func:`unreachable`, :func:`unreachable_host`).
2. **While a body is read** (after urllib3 handed the answer over: a dropped connection, a
   body shorter than announced): :func:`call_with_retries` asks again with the same
   policy, and :func:`spikelab.download.download_verified` resumes from the bytes it has.
3. **Prefect** retries a task only for failures of code without retries of its own
   (ONE-api's requests to Alyx): a :class:`~spikelab.exceptions.RemoteError` means layers
   1 and 2 gave up, and is final (:func:`spikelab.tasks._policy.is_transient`).

Remote HDF5 reads (``loaders/nwb``) go through the same sessions. :func:`redact` is how a
URL appears in any message. ``RemoteError`` stays a ``urllib.error.URLError``: callers of
the DANDI loaders catch that. Digests live in :mod:`spikelab.digests`, verified
downloads in :mod:`spikelab.download`.
"""

from __future__ import annotations

import posixpath
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeVar
from urllib.parse import unquote, urlsplit

import requests
import urllib3
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

USER_AGENT = "spikelab (https://github.com/spikelab)"
#: Answers worth asking again for.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: No wait between two attempts, asked for by the server or not, is longer.
MAX_DELAY_SECONDS = 60.0

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
