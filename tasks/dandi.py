"""Prefect tasks that talk to the DANDI archive (transient failures retried with backoff).

Everything these tasks write lives under ``<cache>/downloads`` (the asset files and their
partial downloads) and ``<cache>/dandi-digest-failures`` (a record per asset whose download
did not match its published digest). Paths are built only from identifiers checked by
:func:`spikelab.loaders.dandi._client.check_server_id` and resolved before use. An asset
is described once (:func:`describe_dandi_asset`) and its typed record handed to every
later step.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import task

from spikelab.http import contained
from spikelab.loaders import list_dandi_assets as list_assets
from spikelab.loaders.dandi import (
    DandiAsset,
    DandiClient,
    download_asset,
    expire_stale_downloads,
    file_matches,
    safe_destination,
)
from spikelab.tasks._policy import NETWORK_RETRIES, cache_dir, retry_unless_client_error

_NETWORK: dict[str, Any] = {**NETWORK_RETRIES, "retry_condition_fn": retry_unless_client_error}


@task(name="list-dandi-assets", **_NETWORK)
def list_dandi_assets(
    dandiset_id: str, version: str, path_glob: str | None, api_base: str
) -> list[dict[str, Any]]:
    """List a dandiset version's assets (the token, if any, comes from DANDI_API_TOKEN).

    An entry with a malformed identifier comes back with ``refused`` set (see
    :func:`spikelab.loaders.list_dandi_assets`), so the flow records it and goes on.
    """
    listing = list_assets(
        dandiset_id, version=version, path_glob=path_glob, api_base=api_base, on_unsafe="report"
    )
    return list(listing)


@task(name="describe-dandi-asset", **_NETWORK)
def describe_dandi_asset(
    asset_id: str, api_base: str, dandiset_id: str | None = None, version: str = "draft"
) -> DandiAsset:
    """Fetch the asset's record (one request): its published size, digests, path and URLs.

    ``dandiset_id`` and ``version`` come normalised from the flow and are kept in the
    record, which the later steps (download, streamed load) take instead of asking again.
    """
    with DandiClient(api_base) as client:
        return client.describe(asset_id, dandiset_id=dandiset_id, version=version)


def downloads_dir() -> Path:
    """The download area of the local cache."""
    return cache_dir() / "downloads"


def expire_downloads() -> list[Path]:
    """Delete partial downloads and temporaries of the download area past their age.

    The age limit is ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (default 72 h); younger partial
    downloads stay and are resumed by the next download of the same asset.
    """
    return expire_stale_downloads(downloads_dir())


@task(name="download-dandi-asset", **_NETWORK)
def download_dandi_asset(asset: DandiAsset) -> str:
    """Download and verify one described asset into the local cache; return its path.

    A failed download leaves its partial file for the next run to resume (unless it is
    older than ``SPIKELAB_PARTIAL_MAX_AGE_HOURS``); a corrupt one leaves nothing.
    """
    root = downloads_dir()
    folder = contained(root, root / asset.asset_id, "download folder")
    destination = contained(root, safe_destination(folder, asset.path), "download")
    if file_matches(destination, asset):
        return str(destination)
    with DandiClient(asset.api_base) as client:
        download_asset(client, client.blob_url(asset.asset_id), asset, destination)
    return str(destination)


def remove_download(path: str) -> None:
    """Delete a downloaded asset once its outputs are in the lake (only inside the cache)."""
    root = downloads_dir()
    contained(root, Path(path), "download").unlink(missing_ok=True)


def _digest_failure_path(record: DandiAsset) -> Path:
    """Where the failure record of an asset's published digest lives (a hashed name)."""
    folder = cache_dir() / "dandi-digest-failures"
    digest = ",".join(f"{kind}={value}" for kind, value in sorted(record.published_digest.items()))
    name = hashlib.sha256(f"{record.asset_id}:{digest}".encode()).hexdigest()
    return contained(folder, folder / f"{name}.json", "digest failure record")


def record_digest_failure(record: DandiAsset, error: Exception) -> None:
    """Remember that an asset's download did not match its published digest.

    Parameters
    ----------
    record : DandiAsset
        The asset as :func:`describe_dandi_asset` gives it.
    error : Exception
        The :class:`~spikelab.exceptions.DigestMismatchError`.
    """
    path = _digest_failure_path(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = {
        "asset_id": record.asset_id,
        "path": record.path,
        "digest": record.published_digest,
        "error": str(error),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(json.dumps(note, indent=2))
    temporary.replace(path)


def digest_failure(record: DandiAsset) -> dict[str, Any] | None:
    """The failure record of this asset and published digest, if a download failed it."""
    path = _digest_failure_path(record)
    try:
        note: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return note


def clear_digest_failure(record: DandiAsset) -> None:
    """Forget a digest failure once a download of the same asset and digest verified."""
    _digest_failure_path(record).unlink(missing_ok=True)
