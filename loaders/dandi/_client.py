"""A small client for the DANDI archive's REST API: one session, paged listings, records.

Sessions, retries and URL redaction come from :mod:`spikelab.http`; this module adds what
is DANDI's: the token rule, the API's error details, paging, the per-host request pace,
and the listing and description of assets as typed records (:mod:`._records`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import requests

from spikelab.exceptions import HostUnreachableError, RemoteError, UnsafeRemoteDataError
from spikelab.http import (
    TRANSIENT_ERRORS,
    RetryPolicy,
    attempts_of,
    is_under,
    new_session,
    redact,
    unreachable_host,
)
from spikelab.ids import DandisetRef
from spikelab.loaders.dandi._records import (
    DEFAULT_API_BASE,
    DandiAsset,
    RefusedAsset,
    check_asset_path,
    check_asset_size,
    check_server_id,
)

T = TypeVar("T")
DEFAULT_BACKOFF_SECONDS = 0.5
# Answers of an object store to a URL that needs the archive's presigned redirect.
NOT_PUBLIC = (401, 403, 404)
# Politeness: requests per second one process sends to one API host (listing pages,
# asset records, download redirects; never the blob store). DANDI rate-limits clients.
REQUESTS_PER_SECOND_ENV = "SPIKELAB_DANDI_REQUESTS_PER_SECOND"
DEFAULT_REQUESTS_PER_SECOND = 40.0


def requests_per_second() -> float:
    """The cap on API requests per second (``SPIKELAB_DANDI_REQUESTS_PER_SECOND``; 0: none).

    Raises
    ------
    ValueError
        The variable is not a number >= 0.
    """
    text = os.environ.get(REQUESTS_PER_SECOND_ENV) or str(DEFAULT_REQUESTS_PER_SECOND)
    try:
        rate = float(text)
    except ValueError:
        rate = -1.0
    if not rate >= 0:
        raise ValueError(
            f"{REQUESTS_PER_SECOND_ENV}={text!r} is not a number >= 0: set the most requests "
            f"per second spikelab sends to a DANDI API (default {DEFAULT_REQUESTS_PER_SECOND:g},"
            " 0 for no cap)"
        )
    return rate


class _Pacer:
    """Space the requests one process sends to each API host (process-wide, thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[str, float] = {}

    def wait(self, host: str, per_second: float) -> None:
        """Sleep until ``host`` may get its next request (at most ``per_second`` a second)."""
        if per_second <= 0:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + 1.0 / per_second
        if slot > now:
            time.sleep(slot - now)


_PACER = _Pacer()


class DandiClient:
    """Talk to one DANDI API: every request goes through :meth:`request`.

    Creating a client does no network I/O. The token (argument, else ``DANDI_API_TOKEN``)
    is sent as ``Authorization: token ...`` only to URLs under ``api_base`` (its path
    included), also after redirects: never to the blob store the downloads redirect to, nor
    to another path of the API's host, and it never appears in messages. Retries follow
    :class:`spikelab.http.RetryPolicy`.

    Parameters
    ----------
    api_base : str, default: DEFAULT_API_BASE
        API root.
    token : str | None, default: None
        Personal access token; defaults to the ``DANDI_API_TOKEN`` environment variable.
    timeout_seconds : float, default: 30.0
        Connect and read timeout of each request.
    max_attempts : int, default: 5
        Tries per request for connection errors and statuses 429/500/502/503/504, and
        per broken download body. A host whose name does not resolve, or that refuses the
        connection, is tried once.
    backoff_seconds : float | None, default: None
        First retry delay (None: ``DEFAULT_BACKOFF_SECONDS``); doubles each attempt, with
        jitter, unless the server sends ``Retry-After``.
    pool_size : int, default: 10
        Connections kept open to each host (a client shared by many threads needs more).

    Requests to the API (not to the blob store) are paced process-wide to at most
    ``SPIKELAB_DANDI_REQUESTS_PER_SECOND`` (default 40) per API host.
    """

    def __init__(
        self,
        api_base: str = DEFAULT_API_BASE,
        token: str | None = None,
        *,
        timeout_seconds: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float | None = None,
        pool_size: int = 10,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._token = token or os.environ.get("DANDI_API_TOKEN") or None
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.policy = RetryPolicy(
            max_attempts, DEFAULT_BACKOFF_SECONDS if backoff_seconds is None else backoff_seconds
        )
        self.session = new_session(self.policy, pool_size=pool_size, auth_scope=self.api_base)
        self._per_second = requests_per_second()
        self._host = self.api_base.split("://", 1)[-1].split("/", 1)[0]

    def __enter__(self) -> DandiClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying HTTP session."""
        self.session.close()

    def __repr__(self) -> str:
        return f"DandiClient({self.api_base!r}, token={'set' if self._token else 'unset'})"

    def url(self, path: str) -> str:
        """Absolute URL of an API path such as ``/assets/<id>/``."""
        return path if path.startswith(("http://", "https://")) else self.api_base + path

    def is_api_url(self, url: str) -> bool:
        """Tell whether ``url`` lies under ``api_base`` (the only place the token goes).

        Same scheme, host and port, and a path at or below the API's once ``..`` segments
        are resolved (see :func:`spikelab.http.is_under`).
        """
        return is_under(url, self.api_base)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """Send one request (the session retries transient failures); return a 2xx/3xx answer.

        Raises
        ------
        RemoteError
            A 4xx answer (at once), or a transient failure on the last attempt. The
            message names the method, the URL without its query and the status.
        HostUnreachableError
            The API's name does not resolve or it refused the connection (at once, no
            retries): ``cannot reach <host>: <why>``.
        """
        target = self.url(url)
        sent_headers = dict(headers or {})
        to_api = self.is_api_url(target)
        if self._token and to_api:
            sent_headers["Authorization"] = f"token {self._token}"
        if to_api:
            _PACER.wait(self._host, self._per_second)
        try:
            response = self.session.request(
                method,
                target,
                headers=sent_headers,
                params=params,
                stream=stream,
                allow_redirects=allow_redirects,
                timeout=self.timeout_seconds,
            )
        except TRANSIENT_ERRORS as error:
            cannot_reach = unreachable_host(target, error)
            if cannot_reach is not None:  # offline, a wrong name, nothing listening
                raise HostUnreachableError(cannot_reach) from None
            raise RemoteError(
                f"{method} {redact(target)} failed after {self.max_attempts} attempts: "
                f"{type(error).__name__}"
            ) from None
        if response.status_code >= 400:
            raise self._error(method, target, response)
        return response

    def _error(self, method: str, url: str, response: requests.Response) -> RemoteError:
        status = response.status_code
        attempts = attempts_of(response)
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text[:200]
        finally:
            response.close()
        hint = ""
        if status in (401, 403):
            hint = (
                " (embargoed dandisets need a token: pass api_token or set DANDI_API_TOKEN)"
                if not self._token
                else " (the token was refused: check that it is valid for this archive)"
            )
        elif status == 404:
            hint = " (not found: check the dandiset id, version and asset id)"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return RemoteError(
            f"{method} {redact(url)} answered HTTP {status}{tries}: {detail}{hint}",
            status=status,
        )

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET an API path and decode its JSON body."""
        response = self.request("GET", path, params=params)
        try:
            return response.json()
        except ValueError as error:
            raise RemoteError(
                f"GET {redact(self.url(path))} did not return JSON: check that the API "
                "base points at a DANDI archive",
                status=response.status_code,
            ) from error

    def paginate(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Yield the ``results`` of every page, following ``next`` links lazily."""
        page = self.get_json(path, params)
        while True:
            yield from page.get("results", [])
            next_url = page.get("next")
            if not next_url:
                return
            page = self.get_json(next_url)

    def describe(
        self, asset_id: str, *, dandiset_id: str | None = None, version: str = "draft"
    ) -> DandiAsset:
        """Fetch an asset's metadata record (one request) as a :class:`DandiAsset`.

        Parameters
        ----------
        asset_id : str
            The asset's UUID.
        dandiset_id : str | None, default: None
            The normalised dandiset it belongs to, recorded in the result.
        version : str, default: "draft"
            The normalised version, recorded in the result.

        Raises
        ------
        UnsafeRemoteDataError
            ``asset_id`` is not a UUID (checked before any request), or the record's
            ``path`` is not usable text or its ``contentSize`` not a whole number of bytes.
        RemoteError
            The archive refused or kept failing.
        """
        identifier = check_server_id("asset_id", asset_id, self.api_base)
        record: dict[str, Any] = self.get_json(f"/assets/{identifier}/")
        base = self.api_base
        path = check_asset_path(record.get("path") or f"{identifier}.nwb", identifier, base)
        size = check_asset_size(record.get("contentSize"), identifier, base, "contentSize")
        return DandiAsset(
            identifier,
            base,
            path,
            size,
            *self._published(identifier, record),
            dandiset_id=dandiset_id,
            version=version,
        )

    def complete(self, asset: DandiAsset) -> DandiAsset:
        """The asset with its digests and content URLs: itself, or described (one request)."""
        if asset.described:
            return asset
        record = self.describe(asset.asset_id, dandiset_id=asset.dandiset_id, version=asset.version)
        return replace(
            record, blob_id=asset.blob_id, zarr_id=asset.zarr_id, modified=asset.modified
        )

    def assets(
        self,
        dandiset: DandisetRef,
        *,
        path_glob: str | None = None,
        page_size: int = 1000,
        records: bool = True,
    ) -> Iterator[DandiAsset | RefusedAsset]:
        """Yield a dandiset version's assets, one API page at a time.

        With ``records`` the listing is asked for each asset's metadata record
        (``metadata=true``), so an asset comes ``described`` with no request of its own;
        an archive that leaves the records out yields assets that :meth:`complete` fills
        in. Every identifier, path and size is checked here; an entry that fails a check
        comes as a :class:`RefusedAsset` (the iteration goes on).

        Parameters
        ----------
        dandiset : DandisetRef
            The dandiset version.
        path_glob : str | None, default: None
            Server-side filter on the whole asset path (``*`` only).
        page_size : int, default: 1000
            Assets per request (the archive's largest page).
        records : bool, default: True
            Ask for the metadata records (False: lighter pages, assets not described).
        """
        params: dict[str, Any] = {"page_size": page_size}
        if records:
            params["metadata"] = "true"
        if path_glob:
            params["glob"] = path_glob
        path = f"/dandisets/{dandiset.dandiset_id}/versions/{dandiset.version}/assets/"
        for entry in self.paginate(path, params):
            try:
                yield self._listed(entry, dandiset)
            except UnsafeRemoteDataError as error:
                yield RefusedAsset.of(entry, str(error), dandiset)

    def _listed(self, entry: Mapping[str, Any], dandiset: DandisetRef) -> DandiAsset:
        """One listing entry as an asset, its identifiers, path, size and record checked."""
        base = self.api_base
        asset_id = check_server_id("asset_id", entry.get("asset_id"), base)
        blob, zarr = (
            None if entry.get(field) is None else check_server_id(key, entry[field], base)
            for field, key in (("blob", "blob_id"), ("zarr", "zarr_id"))
        )
        metadata = entry.get("metadata")
        record: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
        if str(record.get("identifier", asset_id)).lower() != asset_id:
            raise UnsafeRemoteDataError(
                f"the DANDI server {base} listed asset {asset_id} with the metadata record "
                f"of {record.get('identifier')!r}; spikelab refuses the entry"
            )
        described = "digest" in record
        modified = entry.get("modified")
        return DandiAsset(
            asset_id,
            base,
            check_asset_path(entry.get("path"), asset_id, base),
            check_asset_size(entry.get("size"), asset_id, base, "size"),
            *(self._published(asset_id, record) if described else ((), (), None)),
            dandiset_id=dandiset.dandiset_id,
            version=dandiset.version,
            blob_id=blob,
            zarr_id=zarr,
            modified=modified if isinstance(modified, str) else None,
            described=described,
        )

    def _published(
        self, identifier: str, record: Mapping[str, Any]
    ) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], str | None]:
        """An asset record's digests, content URLs and blob URL (the first outside the API).

        Raises
        ------
        UnsafeRemoteDataError
            ``digest`` is not a mapping.
        """
        digests = record.get("digest") or {}
        if not isinstance(digests, dict):
            raise UnsafeRemoteDataError(
                f"the DANDI server {self.api_base} described asset {identifier} with digest "
                f"{digests!r}, which is not a mapping of digest kinds to values; spikelab "
                "refuses the record"
            )
        listed = record.get("contentUrl")
        urls = tuple(u for u in listed if isinstance(u, str)) if isinstance(listed, list) else ()
        blob_url = next(
            (u for u in urls if u.startswith(("http://", "https://")) and not self.is_api_url(u)),
            None,
        )
        return tuple(sorted((str(k), str(v)) for k, v in digests.items() if v)), urls, blob_url

    def read_blob(self, asset: DandiAsset, read: Callable[[str], T]) -> T:
        """``read(url)`` of the asset's bytes, at the record's URL or through the redirect.

        A public asset is read at its record's object-store URL, with no request to the
        API; an embargoed one answers 401/403/404 there and is read through the download
        redirect (a presigned URL), as is an asset whose record names no blob URL. The
        token never goes to either.
        """
        if asset.blob_url is not None:
            try:
                return read(asset.blob_url)
            except RemoteError as error:
                if error.status not in NOT_PUBLIC:
                    raise
        return read(self.blob_url(asset.asset_id))

    def blob_url(self, asset_id: str) -> str:
        """Find where the asset's bytes live: the target of its download redirect."""
        download = f"/assets/{check_server_id('asset_id', asset_id, self.api_base)}/download/"
        response = self.request("GET", download, stream=True, allow_redirects=False)
        response.close()
        location = response.headers.get("Location")
        return location if response.is_redirect and location else self.url(download)
