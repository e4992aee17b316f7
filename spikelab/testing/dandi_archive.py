"""A local stand-in for the DANDI archive: REST API server plus a separate blob server.

Both servers listen on 127.0.0.1 with ephemeral ports and answer over real sockets, so the
code under test runs its real HTTP stack. Only the standard library is used.

Example::

    with DandiStandIn(tmp_path) as dandi:
        asset_id = dandi.add_asset("000123", "sub-01/sub-01_ecephys.nwb", b"...")
        dandi.inject("503", times=2, match="/assets/")
        ...  # point the client at dandi.api_base
        assert dandi.count("blob", "GET") == 1

Behaviour worth knowing when writing tests against it:

- A dandiset is embargoed as soon as one of its assets was added with ``embargoed=True``;
  listing, asset metadata and the API download endpoint then need
  ``Authorization: token <token>`` (missing header: 401, anything else: 403). The blob
  server never reads an ``Authorization`` header (tests can check that none reached it);
  like the archive's private bucket it answers 403 for an embargoed blob unless the URL
  carries the signature the download redirect adds (its ``contentUrl`` is not enough).
- Faults are consumed first-in first-out. ``"500"``, ``"503"``, ``"429"`` and ``"slow"``
  apply to any request on either server; ``"reset"``, ``"truncate"``, ``"no-range"`` and
  ``"corrupt"`` (the whole body arrives, with its first byte flipped) are about a response
  body, so only GET requests to the blob server consume them.
- ``add_asset`` accepts crafted ``asset_id`` and ``blob_id`` values (``"../../x"``, an
  absolute path, anything): the listing serves them as given and, like a hostile server,
  the API answers for such an asset at whatever URL a client's request for it arrives as
  (after the client removes ``..`` segments). ``add_zarr_asset`` publishes a Zarr asset:
  listed with ``zarr`` set and no ``blob``; its download endpoint answers 400.
- The listing adds each asset's metadata record (the same one ``/assets/{id}/`` answers)
  under ``metadata`` when asked with ``metadata=true`` (or ``1``), as DANDI does.
- Adding an asset at a path that already exists in that dandiset version replaces it in the
  listing (as a re-upload does); the old asset id still answers on ``/assets/{id}/``.
- Digests are computed when first asked for (and cached per part-size setting), so a
  500 MB file-backed asset costs nothing until its metadata is requested, and
  monkeypatching ``ETAG_PART_SIZE`` inside a test takes effect.
"""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from spikelab.testing._dandi_api import ApiHandler
from spikelab.testing._dandi_blobs import BlobHandler
from spikelab.testing._dandi_digests import DigestSettings, compute_etag
from spikelab.testing._dandi_http import StandInHandler, StandInServer
from spikelab.testing._dandi_state import (
    FAULT_KINDS,
    ArchiveState,
    Asset,
    Fault,
    RecordedRequest,
)

__all__ = [
    "CHUNK_SIZE",
    "ETAG_MAX_PARTS",
    "ETAG_PART_SIZE",
    "FAULT_KINDS",
    "DandiStandIn",
    "RecordedRequest",
    "dandi_etag",
]

# The three knobs below are read at each use (see _settings), so a test can monkeypatch them.
#: S3 multipart part size the archive uses for ``dandi:dandi-etag`` (64 MiB).
ETAG_PART_SIZE = 64 * 2**20
#: S3's maximum number of parts; at or above it the part size grows to fit.
ETAG_MAX_PARTS = 10_000
#: Size of the reads and writes used to hash and stream file-backed content.
CHUNK_SIZE = 2**20

#: The handler class of each of the stand-in's two servers.
_HANDLERS: dict[str, type[StandInHandler]] = {"api": ApiHandler, "blob": BlobHandler}


def _settings() -> DigestSettings:
    """The digest settings in force now (this module's knobs, read at call time)."""
    return DigestSettings(ETAG_PART_SIZE, ETAG_MAX_PARTS, CHUNK_SIZE)


def dandi_etag(path_or_bytes: bytes | str | os.PathLike[str]) -> str:
    """Compute the archive's ``dandi:dandi-etag`` of a file or a byte string.

    The value is the ETag S3 gives a multipart upload with 64 MiB parts (when that gives
    10,000 parts or more, the part size is ``ceil(size / 10,000)``): the md5 of the
    concatenated binary md5 digests of the parts, in hex, then ``-<number of parts>``.
    An empty blob has no parts: ``md5(b"").hexdigest() + "-0"``.

    Parameters
    ----------
    path_or_bytes : bytes or path-like
        The content itself, or the path of a file to read in chunks.

    Returns
    -------
    str
        The etag, e.g. ``"d41d8cd98f00b204e9800998ecf8427e-0"``.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        content: bytes | Path = bytes(path_or_bytes)
    else:
        content = Path(path_or_bytes)
    return compute_etag(content, _settings())


class DandiStandIn(ArchiveState):
    """The DANDI archive API and its blob store, served on 127.0.0.1 for tests.

    Parameters
    ----------
    root : Path
        A scratch directory (usually ``tmp_path``), kept as ``self.root`` for callers.
    token : str, default: "s3cr3t-token"
        The API token that opens embargoed dandisets.
    page_size_max : int, default: 1000
        Largest accepted ``page_size``; larger values answer 400.

    Attributes ``blob_bytes_served`` (body bytes sent by the blob server),
    ``latency_seconds`` (a delay added to every answer) and ``bandwidth_bytes_per_second``
    (0: loopback speed; else one link of that capacity, shared by every blob answer) serve
    the streaming tests and benchmarks.

    What the two servers read (assets, embargoes, faults, the request log) is its base,
    ``ArchiveState``; the API's routes and the blob store are ``ApiHandler`` and
    ``BlobHandler``. This class starts and stops the servers and publishes the content.
    """

    def __init__(
        self, root: Path, *, token: str = "s3cr3t-token", page_size_max: int = 1000
    ) -> None:
        super().__init__(token, page_size_max, _settings)
        self.root = Path(root)
        self._servers: dict[str, StandInServer] = {}
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> DandiStandIn:
        self._stopping.clear()
        try:
            for name, handler in _HANDLERS.items():
                server = StandInServer(self, name, handler)
                self._servers[name] = server
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.02},
                    name=f"dandi-standin-{name}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self._stop()
            raise
        self.api_base = f"{self._servers['api'].origin}/api"
        self.blob_base = f"{self._servers['blob'].origin}/blobs"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._stopping.set()
        servers = list(self._servers.values())
        for server in servers:
            server.shutdown()
        for server in servers:
            server.close_connections()
            server.server_close()  # closes the listening socket, joins handler threads
        for thread in self._threads:
            thread.join()
        self._servers.clear()
        self._threads.clear()

    # ---------------------------------------------------------------- content

    def add_asset(
        self,
        dandiset_id: str,
        path: str,
        content: bytes | Path,
        *,
        version: str = "draft",
        embargoed: bool = False,
        publish_sha256: bool = True,
        asset_id: str | None = None,
        blob_id: str | None = None,
    ) -> str:
        """Publish an asset and return its new asset id.

        Parameters
        ----------
        dandiset_id : str
            The dandiset, e.g. ``"000123"``.
        path : str
            The asset path inside the dandiset, e.g. ``"sub-01/sub-01_ecephys.nwb"``. It is
            published as given, unchecked, so tests can serve hostile paths such as
            ``"../../escape.nwb"``.
        content : bytes or Path
            Bytes are kept in memory; a file is served from disk in chunks.
        version : str, default: "draft"
            The dandiset version the asset belongs to.
        embargoed : bool, default: False
            Embargo the whole dandiset (its API endpoints then need the token).
        publish_sha256 : bool, default: True
            Whether the metadata lists ``dandi:sha2-256`` next to the etag.
        asset_id, blob_id : str | None, default: None
            Ids to publish instead of new uuid4s; any text, unchecked (a crafted
            ``asset_id`` is answered wherever a request for it lands, see the module notes).

        Returns
        -------
        str
            The asset id.
        """
        if isinstance(content, bytes | bytearray | memoryview):
            data = bytes(content)
            stored: bytes | Path = data
            size = len(data)
        elif isinstance(content, os.PathLike):
            stored = Path(content)
            if not stored.is_file():
                raise FileNotFoundError(f"asset content {stored} is not a file")
            size = stored.stat().st_size
        else:
            raise TypeError(f"content must be bytes or a Path, not {type(content).__name__}")
        asset = Asset(
            asset_id=str(uuid.uuid4()) if asset_id is None else asset_id,
            dandiset_id=dandiset_id,
            version=version,
            path=path,
            content=stored,
            size=size,
            publish_sha256=publish_sha256,
            blob_id=str(uuid.uuid4()) if blob_id is None else blob_id,
            created=datetime.now(UTC),
            crafted=asset_id is not None,
        )
        self._publish(asset, embargoed)
        return asset.asset_id

    def add_zarr_asset(self, dandiset_id: str, path: str, *, version: str = "draft") -> str:
        """Publish a Zarr asset (no blob; listed with ``zarr`` set) and return its asset id."""
        asset = Asset(
            asset_id=str(uuid.uuid4()),
            dandiset_id=dandiset_id,
            version=version,
            path=path,
            content=b"",
            size=0,
            publish_sha256=False,
            blob_id=str(uuid.uuid4()),
            created=datetime.now(UTC),
            zarr_id=str(uuid.uuid4()),
        )
        self._publish(asset, embargoed=False)
        return asset.asset_id

    def corrupt_digest(self, asset_id: str) -> None:
        """Make the published ``dandi:dandi-etag`` and ``dandi:sha2-256`` of an asset wrong.

        The wrong values keep the right shape (hex, same part count), so clients fail on
        the comparison, not on parsing.
        """
        with self._lock:
            if asset_id not in self._assets:
                raise KeyError(f"no asset {asset_id!r} in the stand-in")
            self._assets[asset_id].corrupt = True

    # ---------------------------------------------------------------- faults and records

    def inject(self, kind: str, *, times: int = 1, match: str = "") -> None:
        """Queue a fault for the next ``times`` requests whose path contains ``match``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        with self._lock:
            self._faults.append(Fault(kind, times, match))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def count(self, server: str | None = None, method: str | None = None, match: str = "") -> int:
        """Count recorded requests by server (``"api"``/``"blob"``), method and path part."""
        with self._lock:
            recorded = list(self.requests)
        return sum(
            1
            for r in recorded
            if (server is None or r.server == server)
            and (method is None or r.method == method.upper())
            and match in r.path
        )
