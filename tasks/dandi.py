"""Prefect tasks that talk to the DANDI archive (retried with backoff, 4xx excepted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from spikelab.loaders import list_dandi_assets as list_assets
from spikelab.loaders._dandi_client import DandiClient
from spikelab.loaders._download import (
    download_verified,
    expected_digest,
    file_matches,
    safe_destination,
)
from spikelab.tasks._policy import NETWORK_RETRIES, cache_dir, retry_unless_client_error

_NETWORK: dict[str, Any] = {**NETWORK_RETRIES, "retry_condition_fn": retry_unless_client_error}


@task(name="list-dandi-assets", **_NETWORK)
def list_dandi_assets(
    dandiset_id: str, version: str, path_glob: str | None, api_base: str
) -> list[dict[str, Any]]:
    """List a dandiset version's assets (the token, if any, comes from DANDI_API_TOKEN)."""
    return list(list_assets(dandiset_id, version=version, path_glob=path_glob, api_base=api_base))


@task(name="describe-dandi-asset", **_NETWORK)
def describe_dandi_asset(asset_id: str, api_base: str) -> dict[str, Any]:
    """The asset's published size, digest and path: its content identity."""
    with DandiClient(api_base) as client:
        record = client.asset_metadata(asset_id)
    digest = expected_digest(record.get("digest") or {})
    return {
        "asset_id": asset_id,
        "path": record.get("path") or f"{asset_id}.nwb",
        "size": record.get("contentSize"),
        "digest": dict([digest]) if digest else {},
        "all_digests": record.get("digest") or {},
    }


@task(name="download-dandi-asset", **_NETWORK)
def download_dandi_asset(asset: dict[str, Any], api_base: str) -> str:
    """Download and verify one asset into the local cache; return its path."""
    destination = safe_destination(cache_dir() / "downloads" / asset["asset_id"], asset["path"])
    if file_matches(destination, asset["size"], asset["all_digests"]):
        return str(destination)
    with DandiClient(api_base) as client:
        download_verified(
            client,
            client.blob_url(asset["asset_id"]),
            destination,
            size=asset["size"],
            digests=asset["all_digests"],
        )
    return str(destination)


def remove_download(path: str) -> None:
    """Delete a downloaded asset once its outputs are in the lake."""
    Path(path).unlink(missing_ok=True)
