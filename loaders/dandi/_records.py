"""What the DANDI archive says of an asset, checked where it enters: ids, paths, records.

Every identifier a DANDI server sends is checked for its shape before it becomes a URL
part or a folder name; :class:`DandiAsset` is the typed record of one asset (from the
listing or from its own metadata request), :class:`RefusedAsset` a listing entry that
failed a check.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spikelab.exceptions import UnsafeRemoteDataError
from spikelab.ids import DANDISET_VERSION, DandisetRef

DEFAULT_API_BASE = "https://api.dandiarchive.org/api"
SHA256 = "dandi:sha2-256"
ETAG = "dandi:dandi-etag"
_ASSET_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
# The shape every identifier a DANDI server sends must have, and how to describe it.
_SERVER_IDS: dict[str, tuple[re.Pattern[str], str]] = {
    "asset_id": (_ASSET_ID, "a UUID"),
    "blob_id": (_ASSET_ID, "a UUID"),
    "zarr_id": (_ASSET_ID, "a UUID"),
    "dandiset_id": (re.compile(r"\d{6}"), "a six-digit dandiset id"),
    "version": (DANDISET_VERSION, "'draft' or a published version like 0.231012.1234"),
}


def check_server_id(kind: str, value: object, api_base: str) -> str:
    """Return an identifier a DANDI server sent, after checking its shape.

    Asset, blob and Zarr ids are UUIDs (returned in lower case), dandiset ids six digits,
    versions ``draft`` or ``0.YYMMDD.N`` (up to four digits after the date). These values
    become URL parts and folder names, so nothing else is ever used.

    Parameters
    ----------
    kind : {"asset_id", "blob_id", "zarr_id", "dandiset_id", "version"}
        Which identifier it is.
    value : object
        What the server sent.
    api_base : str
        The server, named in the error.

    Raises
    ------
    UnsafeRemoteDataError
        The value does not have the shape of ``kind``.
    """
    pattern, shape = _SERVER_IDS[kind]
    if not (isinstance(value, str) and pattern.fullmatch(value)):
        raise UnsafeRemoteDataError(
            f"the DANDI server {api_base} sent {kind} {value!r}, which is not {shape}; "
            "spikelab refuses to use it (it could name a path outside the cache): check "
            "that --api-base points at a DANDI archive you trust"
        )
    return value.lower() if pattern is _ASSET_ID else value


# Characters no asset path may hold: NUL breaks every file call, the others break logs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_asset_size(value: object, asset_id: str, api_base: str, field: str) -> int | None:
    """Return an asset's size as the server sent it: a whole number of bytes, or None.

    Parameters
    ----------
    value : object
        What the server sent (``contentSize`` of a record, ``size`` of a listing entry).
    asset_id : str
        The asset, named in the error.
    api_base : str
        The server, named in the error.
    field : str
        The API's name of the field, named in the error.

    Raises
    ------
    UnsafeRemoteDataError
        ``value`` is not None and not a non-negative integer (a string, a float, a bool).
    """
    if value is None or (type(value) is int and value >= 0):
        return value
    raise UnsafeRemoteDataError(
        f"the DANDI server {api_base} described asset {asset_id} with {field} {value!r}, "
        "which is not a whole number of bytes; spikelab refuses the record: check that "
        "--api-base points at a DANDI archive, or report the asset to the archive"
    )


def check_asset_path(value: object, asset_id: str, api_base: str, field: str = "path") -> str:
    """Return an asset's path as the server sent it, refusing one no file can have.

    Only the text is checked here (non-empty, no NUL or other control character); where
    the path may be written is checked where a file is written.

    Raises
    ------
    UnsafeRemoteDataError
        ``value`` is not text, is empty, or holds a control character.
    """
    if not isinstance(value, str) or not value:
        raise UnsafeRemoteDataError(
            f"the DANDI server {api_base} described asset {asset_id} without a text {field} "
            f"(it sent {value!r}); spikelab refuses the record"
        )
    bad = _CONTROL.search(value)
    if bad:
        raise UnsafeRemoteDataError(
            f"the DANDI server {api_base} described asset {asset_id} with {field} {value!r}, "
            f"which holds the control character {bad.group()!r} at position {bad.start()}; "
            "no file can have that name, so spikelab refuses the record: report the asset "
            "to the archive"
        )
    return value


def parse_asset_reference(reference: str, api_base: str) -> tuple[str, str]:
    """Split an asset UUID, or a URL that names one, into (asset id, API base).

    A URL such as ``https://api.dandiarchive.org/api/assets/<uuid>/download/`` also says
    which archive to ask; its API base replaces ``api_base``.

    Raises
    ------
    ValueError
        If no asset UUID can be found.
    """
    text = reference.strip()
    if _ASSET_ID.fullmatch(text):
        return text.lower(), api_base
    match = re.match(r"(https?://.+?)/assets/(" + _ASSET_ID.pattern + r")(?:/|$)", text, re.I)
    if match:
        return match.group(2).lower(), match.group(1)
    raise ValueError(
        f"{reference!r} is neither a DANDI asset UUID nor an asset URL like "
        f"{DEFAULT_API_BASE}/assets/<uuid>/download/"
    )


def pick_digest(digests: Mapping[str, str]) -> tuple[str, str] | None:
    """The published digest to verify: sha2-256 when present, else the dandi-etag."""
    for kind in (SHA256, ETAG):
        if digests.get(kind):
            return kind, digests[kind]
    return None


@dataclass(frozen=True)
class DandiAsset:
    """One DANDI asset, as its metadata record describes it: fetched once, passed down.

    Field names are spikelab's; the API's names are given beside each.

    Parameters
    ----------
    asset_id : str
        The asset's UUID (``identifier``), lower case.
    api_base : str
        The archive that described it.
    path : str
        Path inside the dandiset (``path``).
    size : int | None
        Bytes (``contentSize``).
    digests : tuple of (str, str)
        Every published digest as ``(kind, value)`` pairs (``digest``).
    content_urls : tuple of str
        Where the bytes can be read (``contentUrl``).
    blob_url : str | None
        The first content URL outside the API: an object-store URL that a public asset's
        bytes are read from without the download redirect.
    dandiset_id : str | None, default: None
        The dandiset it was found in, when known.
    version : str, default: "draft"
        The dandiset version it was found in.
    blob_id, zarr_id : str | None, default: None
        The stored file's or Zarr's id, as a listing gives them (``blob``, ``zarr``).
    modified : str | None, default: None
        When the asset last changed, as a listing gives it.
    described : bool, default: True
        Whether the digests and content URLs are known: False for a listing entry that
        came without its metadata record (:meth:`DandiClient.describe` fills them in).
    """

    asset_id: str
    api_base: str
    path: str
    size: int | None
    digests: tuple[tuple[str, str], ...]
    content_urls: tuple[str, ...]
    blob_url: str | None
    dandiset_id: str | None = None
    version: str = "draft"
    blob_id: str | None = None
    zarr_id: str | None = None
    modified: str | None = None
    described: bool = True

    @property
    def digest(self) -> tuple[str, str] | None:
        """The digest a download is verified against (see :func:`pick_digest`)."""
        return pick_digest(dict(self.digests))

    @property
    def published_digest(self) -> dict[str, str]:
        """:attr:`digest` as ``{kind: value}`` (empty when the archive publishes none)."""
        return dict([self.digest]) if self.digest else {}

    @property
    def is_zarr(self) -> bool:
        """Whether the asset is stored as Zarr (a Zarr id and no blob, or a ``.zarr`` path)."""
        return (self.zarr_id is not None and self.blob_id is None) or self.path.endswith(".zarr")

    @property
    def download_url(self) -> str:
        """The API endpoint that redirects to the asset's bytes."""
        return f"{self.api_base}/assets/{self.asset_id}/download/"

    def listing_entry(self) -> dict[str, Any]:
        """The asset as :func:`spikelab.loaders.list_dandi_assets` yields it (a dict)."""
        entry: dict[str, Any] = {
            "asset_id": self.asset_id,
            "path": self.path,
            "size": self.size,
            "download_url": self.download_url,
        }
        optional = {"modified": self.modified, "blob_id": self.blob_id, "zarr_id": self.zarr_id}
        entry.update((key, value) for key, value in optional.items() if value is not None)
        return {**entry, "dandiset_id": self.dandiset_id, "version": self.version}

    @property
    def source_reference(self) -> str:
        """The asset's API URL, inside its dandiset version when that is known."""
        if self.dandiset_id is None:
            return f"{self.api_base}/assets/{self.asset_id}/"
        return (
            f"{self.api_base}/dandisets/{self.dandiset_id}/versions/{self.version}"
            f"/assets/{self.asset_id}/"
        )


@dataclass(frozen=True)
class RefusedAsset:
    """A listing entry spikelab will not use, under a key derived from (never equal to) its id.

    Parameters
    ----------
    asset_id : str
        ``refused-<hash>`` of what the server sent as the asset id: safe as a file name.
    path : str
        The path the server sent, for messages only.
    problem : str
        Why the entry was refused.
    dandiset_id, version : str
        Where it was listed.
    """

    asset_id: str
    path: str
    problem: str
    dandiset_id: str
    version: str

    @classmethod
    def of(cls, entry: Mapping[str, Any], problem: str, dandiset: DandisetRef) -> RefusedAsset:
        """The refused form of a listing entry."""
        digest = hashlib.sha256(repr(entry.get("asset_id")).encode()).hexdigest()[:16]
        return cls(
            f"refused-{digest}",
            str(entry.get("path")),
            problem,
            dandiset.dandiset_id,
            dandiset.version,
        )

    def listing_entry(self) -> dict[str, Any]:
        """The entry as :func:`spikelab.loaders.list_dandi_assets` reports it."""
        return {
            "refused": self.problem,
            "asset_id": self.asset_id,
            "path": self.path,
            "dandiset_id": self.dandiset_id,
            "version": self.version,
        }
