"""DANDI archive: list a dandiset's assets, load an NWB asset's Units, convert raw to Zarr."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

from spikelab.exceptions import (
    FileFormatError,
    StreamingError,
    UnsafeRemoteDataError,
)
from spikelab.ids import DandisetRef, normalize_dandiset_id, normalize_version
from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.dandi._download import (
    fetch_asset,
    file_matches,
    safe_destination,
)
from spikelab.loaders.dandi._records import (
    DEFAULT_API_BASE,
    DandiAsset,
    RefusedAsset,
    parse_asset_reference,
)
from spikelab.loaders.nwb import load_remote_nwb, load_spikedata_from_nwb
from spikelab.loaders.nwb.recording import (
    save_nwb_recording_as_zarr,
    write_sidecar,
    zarr_destination,
)
from spikelab.spikedata import SpikeData


def list_dandi_assets(
    dandiset_id: str,
    *,
    version: str = "draft",
    path_glob: str | None = None,
    api_token: str | None = None,
    api_base: str = DEFAULT_API_BASE,
    page_size: int = 100,
    request_timeout_seconds: float = 30.0,
    on_unsafe: Literal["raise", "report"] = "raise",
) -> Iterator[dict[str, Any]]:
    """Iterate over the assets of a dandiset version, one API page at a time.

    Every identifier the server lists is checked before it is used (asset, blob and Zarr
    ids must be UUIDs; the path must be text without control characters, the size a whole
    number of bytes); the asset path is only contained later, where a file is written.

    Parameters
    ----------
    dandiset_id : str
        Six-digit id such as ``"000006"``.
    version : str, default: "draft"
        ``"draft"`` or a published version such as ``"0.231012.1234"``.
    path_glob : str | None, default: None
        Server-side filter on the whole asset path (``*`` only), e.g. ``"*.nwb"``.
    api_token : str | None, default: None
        Token for embargoed dandisets; defaults to ``DANDI_API_TOKEN``.
    api_base : str, default: DEFAULT_API_BASE
        API root.
    page_size : int, default: 100
        Assets per request (the archive allows up to 1000).
    request_timeout_seconds : float, default: 30.0
        Timeout of each request.
    on_unsafe : {"raise", "report"}, default: "raise"
        What a listed entry with a malformed identifier does: ``raise`` stops the
        iteration; ``report`` yields it as ``{"refused": <message>, "asset_id":
        "refused-<hash>", "path", "dandiset_id", "version"}`` (a safe key, never the value
        the server sent) so a caller can record it and go on.

    Yields
    ------
    dict
        ``asset_id``, ``path``, ``size``, ``download_url``, ``dandiset_id``, ``version``,
        and ``modified``, ``blob_id`` (the stored file's id: an asset id never changes
        its bytes, a new upload gets a new one) and ``zarr_id`` (a Zarr asset) when the
        archive gives them.

    Raises
    ------
    ValueError
        A malformed dandiset id or version (raised at the call, before any request).
    RemoteError
        The archive refused or kept failing a request.
    UnsafeRemoteDataError
        With ``on_unsafe="raise"``: the server listed a malformed identifier, path or size.
    """
    dandiset = DandisetRef.parse(dandiset_id, version)
    if not 1 <= page_size <= 1000:
        raise ValueError(f"page_size must be between 1 and 1000, got {page_size}")
    client = DandiClient(api_base, api_token, timeout_seconds=request_timeout_seconds)

    def assets() -> Iterator[dict[str, Any]]:
        with client:
            for asset in client.assets(
                dandiset, path_glob=path_glob, page_size=page_size, records=False
            ):
                if isinstance(asset, RefusedAsset) and on_unsafe == "raise":
                    raise UnsafeRemoteDataError(asset.problem)
                yield asset.listing_entry()

    return assets()


def _refuse_zarr(asset: DandiAsset) -> None:
    if asset.is_zarr:
        raise FileFormatError(
            f"DANDI asset {asset.asset_id} ({asset.path}) is a Zarr asset: spikelab reads "
            "only NWB HDF5 assets from DANDI; open a local copy with hdmf-zarr's NWBZarrIO "
            "(pip install 'spikelab[nwbzarr]')"
        )


def _provenance(asset: DandiAsset) -> dict[str, Any]:
    """The DANDI fields every loaded asset's metadata carries."""
    provenance: dict[str, Any] = {
        "dandi_asset_id": asset.asset_id,
        "dandi_version": asset.version,
        "dandi_path": asset.path,
        "dandi_digest": asset.published_digest,
        "source_reference": asset.source_reference,
    }
    if asset.dandiset_id is not None:
        provenance["dandi_dandiset_id"] = asset.dandiset_id
    return provenance


@contextmanager
def _described(
    asset: str | DandiAsset,
    dandiset_id: str | None,
    version: str,
    api_token: str | None,
    api_base: str,
    request_timeout_seconds: float,
) -> Iterator[tuple[DandiClient, DandiAsset]]:
    """A client of the asset's archive and the asset's record (fetched unless given).

    A given record keeps its own dandiset and version unless ``dandiset_id`` is given.

    Raises
    ------
    FileFormatError
        The asset is stored as Zarr.
    """
    if isinstance(asset, DandiAsset):
        base = asset.api_base
    else:
        identifier, base = parse_asset_reference(asset, api_base)
    with DandiClient(base, api_token, timeout_seconds=request_timeout_seconds) as client:
        if not isinstance(asset, DandiAsset):
            dandiset = normalize_dandiset_id(dandiset_id) if dandiset_id is not None else None
            record = client.describe(
                identifier, dandiset_id=dandiset, version=normalize_version(version)
            )
        elif dandiset_id is not None:
            where = DandisetRef.parse(dandiset_id, version)
            record = client.complete(
                replace(asset, dandiset_id=where.dandiset_id, version=where.version)
            )
        else:
            record = client.complete(asset)
        _refuse_zarr(record)
        yield client, record


def _streamed(client: DandiClient, asset: DandiAsset, **nwb_options: Any) -> SpikeData:
    """Load an asset's Units over HTTP range requests, without downloading the file."""
    sd = client.read_blob(asset, partial(load_remote_nwb, size_bytes=asset.size, **nwb_options))
    provenance = _provenance(asset)
    sd.metadata.update(provenance)
    sd.metadata["source_file"] = provenance["source_reference"]
    return sd


@contextmanager
def _downloaded(
    client: DandiClient,
    asset: DandiAsset,
    *,
    download_dir: str | os.PathLike[str] | None,
    keep: bool,
    download_timeout_seconds: float,
) -> Iterator[Path]:
    """Download and verify one asset; yield its local path.

    Without ``download_dir`` the file lives in a temporary folder removed on exit (also on
    error) unless ``keep``.
    """
    folder = Path(download_dir) if download_dir is not None else None
    temporary = None if folder is not None else Path(tempfile.mkdtemp(prefix="spikelab-dandi-"))
    try:
        target = safe_destination(folder or temporary, asset.path)  # type: ignore[arg-type]
        if not file_matches(target, asset):
            fetch_asset(client, asset, target, timeout_seconds=download_timeout_seconds)
        yield target
    finally:
        if temporary is not None and not keep:
            shutil.rmtree(temporary, ignore_errors=True)


def load_spikedata_from_dandi(
    asset_id: str | DandiAsset,
    *,
    dandiset_id: str | None = None,
    version: str = "draft",
    download_dir: str | os.PathLike[str] | None = None,
    api_token: str | None = None,
    api_base: str = DEFAULT_API_BASE,
    request_timeout_seconds: float = 30.0,
    download_timeout_seconds: float = 600.0,
    allow_no_units: bool = False,
    length_ms: float | None = None,
    start_time_ms: float | None = None,
    stream: bool = False,
    stream_only: bool = False,
) -> SpikeData:
    """Download one NWB asset from DANDI, verify it, and load its Units as SpikeData.

    The download streams to disk in chunks, resumes a broken transfer with an HTTP Range
    request, retries transient failures, and checks the size and the digest the archive
    publishes (sha2-256, else the dandi-etag) before the file is used.

    Parameters
    ----------
    asset_id : str or DandiAsset
        Asset UUID, or a URL naming one (its API base then replaces ``api_base``), or the
        record ``describe_dandi_asset`` returned: then no metadata request is sent, and
        its own archive, dandiset and version are used unless ``dandiset_id`` is given.
    dandiset_id : str | None, default: None
        The owning dandiset (``000006`` or ``DANDI:000006``), recorded in the provenance.
    version : str, default: "draft"
        Dandiset version, recorded in the provenance.
    download_dir : str or PathLike or None, default: None
        Where to keep the file (at its asset path, never outside this folder). None uses a
        temporary folder that is always removed.
    api_token : str | None, default: None
        Token for embargoed assets; defaults to ``DANDI_API_TOKEN``. Sent only to the API.
    api_base : str, default: DEFAULT_API_BASE
        API root.
    request_timeout_seconds : float, default: 30.0
        Timeout of each API request.
    download_timeout_seconds : float, default: 600.0
        Longest time the whole download may take.
    allow_no_units : bool, default: False
        Passed on to :func:`load_spikedata_from_nwb`: N=0 with metadata for raw assets.
    length_ms, start_time_ms : float | None, default: None
        Passed on to :func:`load_spikedata_from_nwb`.
    stream : bool, default: False
        Read only the Units table over HTTP range requests instead of downloading the
        file. The whole-file digest cannot be checked then (``digest_verified`` is False).
        When streaming fails (no Range support, unreadable bytes) the asset is downloaded
        instead, with a warning.
    stream_only : bool, default: False
        With ``stream``: raise instead of falling back to the download.

    Returns
    -------
    SpikeData
        With the NWB metadata plus ``dandi_asset_id``, ``dandi_dandiset_id`` (when given),
        ``dandi_version``, ``dandi_path``, ``dandi_digest``, ``source_reference``,
        ``transfer`` ("streamed" or "downloaded"), ``bytes_read``, ``digest_verified`` and,
        with ``download_dir``, ``downloaded_path``.

    Raises
    ------
    RemoteError
        The archive refused or kept failing (a ``urllib.error.URLError``).
    DigestMismatchError
        The downloaded bytes do not match the published digest (a ``ValueError``).
    ValueError
        A malformed asset id or dandiset id, an unsafe asset path, or an NWB problem.
    StreamingError
        With ``stream_only``: the asset could not be streamed.
    """
    nwb_options = {
        "allow_no_units": allow_no_units,
        "length_ms": length_ms,
        "start_time_ms": start_time_ms,
    }
    with _described(
        asset_id, dandiset_id, version, api_token, api_base, request_timeout_seconds
    ) as (client, asset):
        if stream:
            try:
                return _streamed(client, asset, **nwb_options)
            except StreamingError as error:
                if stream_only:
                    raise
                warnings.warn(
                    f"streaming asset {asset.asset_id} failed ({error}); downloading it instead",
                    UserWarning,
                    stacklevel=2,
                )
        with _downloaded(
            client,
            asset,
            download_dir=download_dir,
            keep=False,
            download_timeout_seconds=download_timeout_seconds,
        ) as path:
            sd = load_spikedata_from_nwb(path, **nwb_options)
            size = path.stat().st_size
    provenance = _provenance(asset)
    sd.metadata.update(provenance)
    sd.metadata.update(
        transfer="downloaded", bytes_read=size, digest_verified=bool(provenance["dandi_digest"])
    )
    if download_dir is not None:
        sd.metadata["downloaded_path"] = str(path)
    else:
        sd.metadata["source_file"] = provenance["source_reference"]
    return sd


def load_recording_from_dandi(
    asset_id: str | DandiAsset,
    zarr_dest: str | os.PathLike[str],
    *,
    dandiset_id: str | None = None,
    version: str = "draft",
    electrical_series_path: str | None = None,
    overwrite: bool = False,
    download_dir: str | os.PathLike[str] | None = None,
    keep_nwb: bool = False,
    api_token: str | None = None,
    api_base: str = DEFAULT_API_BASE,
    request_timeout_seconds: float = 30.0,
    download_timeout_seconds: float = 600.0,
    save_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Download a DANDI NWB asset and save its raw ElectricalSeries as SpikeInterface Zarr.

    The Zarr is written under a temporary name beside ``zarr_dest`` and renamed into place,
    so a failed conversion leaves nothing half-written. A JSON sidecar
    ``<zarr_dest>.json`` records provenance, NWB metadata and the recording's shape.

    Parameters
    ----------
    asset_id : str or DandiAsset
        Asset UUID, a URL naming one, or its record (as for
        :func:`load_spikedata_from_dandi`).
    zarr_dest : str or PathLike
        The Zarr folder to create.
    dandiset_id : str | None, default: None
        Owning dandiset, for the provenance.
    version : str, default: "draft"
        Dandiset version, for the provenance.
    electrical_series_path : str | None, default: None
        Which ElectricalSeries (e.g. ``"acquisition/ElectricalSeriesAP"``) when the file
        has several; None lets SpikeInterface pick the only one.
    overwrite : bool, default: False
        Replace an existing ``zarr_dest``; otherwise it is an error.
    download_dir : str or PathLike or None, default: None
        Where the NWB file goes; None uses a temporary folder.
    keep_nwb : bool, default: False
        Keep the NWB file after conversion and return its path.
    api_token, api_base, request_timeout_seconds, download_timeout_seconds
        As for :func:`load_spikedata_from_dandi`.
    save_kwargs : mapping | None, default: None
        Passed to SpikeInterface's ``BaseRecording.save`` (e.g. ``{"n_jobs": 4}``).

    Returns
    -------
    dict
        ``zarr_path``, ``recording_metadata_path``, ``sampling_rate_hz``, ``n_channels``,
        ``n_samples``, ``duration_seconds``, the provenance fields, the NWB subject and
        session fields, and ``downloaded_nwb_path`` with ``keep_nwb``.

    Raises
    ------
    FileExistsError
        ``zarr_dest`` exists and ``overwrite`` is False (checked before downloading).
    ImportError
        spikeinterface is not installed.
    ValueError
        The file has no ElectricalSeries SpikeInterface can open.
    """
    destination = zarr_destination(zarr_dest, overwrite=overwrite)  # before downloading
    with (
        _described(
            asset_id, dandiset_id, version, api_token, api_base, request_timeout_seconds
        ) as (client, asset),
        _downloaded(
            client,
            asset,
            download_dir=download_dir,
            keep=keep_nwb,
            download_timeout_seconds=download_timeout_seconds,
        ) as nwb_path,
    ):
        provenance = _provenance(asset)
        result = save_nwb_recording_as_zarr(
            nwb_path,
            destination,
            electrical_series_path=electrical_series_path,
            overwrite=overwrite,
            save_kwargs=save_kwargs,
            provenance=provenance,
        )
        if keep_nwb:
            result["downloaded_nwb_path"] = str(nwb_path)
            write_sidecar(result)
        elif download_dir is not None:
            nwb_path.unlink(missing_ok=True)
    return result
