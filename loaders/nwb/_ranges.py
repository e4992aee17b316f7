"""HTTP range requests for remote HDF5 reads, through one kept-alive spikelab session.

Every open of a remote file asks for its byte ranges through a :class:`RangeClient`. The
clients of a process share one session per retry policy (:func:`spikelab.http.new_session`),
so a file after the first reuses the connections of those before it: no new TCP (or TLS)
handshake per file. What requests reads from the environment for a host (proxies, a CA
bundle) is read once per host, not at every request.
"""

from __future__ import annotations

import os
import re
import threading
from functools import lru_cache, partial
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import requests

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

SESSION_POOL_SIZE = 64  # connections kept per host, for many files read at once
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_SESSIONS: dict[tuple[int, RetryPolicy], requests.Session] = {}
_SESSIONS_LOCK = threading.Lock()


def shared_session(policy: RetryPolicy) -> requests.Session:
    """The session of this process for ``policy`` (a forked child makes its own).

    It keeps no cookies and does not read the environment at each request (see
    :func:`_environment`).
    """
    key = (os.getpid(), policy)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = new_session(policy, pool_size=SESSION_POOL_SIZE)
            session.trust_env = False
            session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            _SESSIONS[key] = session
    return session


@lru_cache(maxsize=256)
def _environment(origin: str) -> dict[str, Any]:
    """The proxies, CA bundle and client certificate requests takes from the environment."""
    with requests.Session() as probe:
        settings = probe.merge_environment_settings(origin, {}, None, None, None)
    return {key: settings[key] for key in ("proxies", "verify", "cert")}


class RangeClient:
    """Range requests to one URL with a timeout and a retry policy; counts the bytes.

    ``bytes_read`` adds up the body length every answer announced, so it agrees with what
    the server sent.
    """

    def __init__(self, url: str, *, timeout_seconds: float, policy: RetryPolicy) -> None:
        parts = urlsplit(url)
        self.url = url
        self.bytes_read = 0
        self._timeout_seconds = timeout_seconds
        self._policy = policy
        self._session = shared_session(policy)
        self._settings = _environment(f"{parts.scheme}://{parts.netloc}/")
        self._counting = threading.Lock()  # answers arrive on several threads at once

    def get(self, byte_range: str) -> tuple[int, int, bytes]:
        """GET ``Range: bytes=<byte_range>``; return the first offset, the file size, the bytes.

        One retry layer per failure: the session retries 429, 5xx, failed connections and
        stalled answers inside the request; a connection dropped while the body is read, or
        a body cut short, happens after the session has handed the answer over, and only
        that is asked for again here, with the same policy.

        Raises
        ------
        RangeNotSupportedError
            Any other answer but 206 with a ``Content-Range``. The body of such an answer
            (maybe the whole file) is never read.
        StreamingError
            Still failing after ``policy.attempts`` attempts.
        """
        try:
            return call_with_retries(partial(self._get_once, byte_range), self._policy)
        except TRANSIENT_ERRORS as error:
            raise self._failed(byte_range, self._policy.attempts, error) from error

    def _failed(
        self, byte_range: str, attempts: int, why: object, status: int | None = None
    ) -> StreamingError:
        return StreamingError(
            f"{redact(self.url)}: bytes {byte_range} failed {attempts} times ({why})",
            status=status,
        )

    def _get_once(self, byte_range: str) -> tuple[int, int, bytes]:
        try:
            response = self._session.get(
                self.url,
                headers={"Range": f"bytes={byte_range}"},
                stream=True,
                timeout=self._timeout_seconds,
                **self._settings,
            )
        except TRANSIENT_ERRORS as error:  # the session's own retries are spent
            raise self._failed(byte_range, self._policy.attempts, error) from error
        with response:
            with self._counting:
                self.bytes_read += int(response.headers.get("Content-Length", 0))
            if response.status_code in RETRY_STATUSES:  # the session's retries are spent
                status = response.status_code
                raise self._failed(byte_range, attempts_of(response), f"HTTP {status}", status)
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if response.status_code != 206 or match is None:
                raise RangeNotSupportedError(
                    f"{redact(self.url)} answered HTTP {response.status_code} to a Range "
                    "request; it cannot be streamed (download it instead)",
                    status=response.status_code,
                )
            data = response.raw.read(decode_content=True)
        first, last, size = (int(group) for group in match.groups())
        if len(data) != last - first + 1:
            raise IncompleteBodyError(f"{len(data)} of {last - first + 1} bytes arrived")
        return first, size, data
