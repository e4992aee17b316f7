"""The DANDI steps of an asset's task run: list, describe, download, load (plain functions).

The listing is a Prefect task; the per-asset steps are plain functions that the flow's one
task run per batch of assets calls (:func:`spikelab.flows.dandi.ingest_dandi_assets`), so an
asset costs no task run of its own per step and its data stays in memory from the read to
the publication. Transient network failures are retried by the HTTP layer
(:mod:`spikelab.http`: 429 with ``Retry-After``, 5xx, resets, with backoff) inside each
request; Prefect does not retry them again. One :class:`DandiClient` per API and process
is shared by every thread (:func:`api_client`), so connections are reused and the API's
requests-per-second cap holds for the whole run.

Everything these steps write lives under ``<cache>/downloads`` (the asset files and their
partial downloads) and ``<cache>/dandi-digest-failures`` (a record per asset whose download
did not match its published digest). Paths are built only from identifiers checked by
:func:`spikelab.loaders.dandi._records.check_server_id` and resolved before use. An
asset's typed record comes with the listing (or from one request when the archive left it
out: :func:`describe_dandi_asset`) and is handed to every later step.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from prefect import task

from spikelab.ids import DandisetRef
from spikelab.io.atomic import contained
from spikelab.loaders import load_spikedata_from_dandi, load_spikedata_from_nwb
from spikelab.loaders.dandi import (
    DandiAsset,
    DandiClient,
    RefusedAsset,
    expire_stale_downloads,
    fetch_asset,
    file_matches,
    safe_destination,
)
from spikelab.tasks._policy import cache_dir
from spikelab.tasks.load import Loaded, Target, load_and_prepare

LISTING_PAGE_SIZE = 1000  # the largest page the DANDI API gives
_CLIENT_CONNECTIONS = 64  # connections a shared client keeps per host
_clients: dict[tuple[str, str | None], DandiClient] = {}
_clients_lock = threading.Lock()


@task(name="list-dandi-assets")
def list_dandi_assets(
    dandiset: DandisetRef, path_glob: str | None, api_base: str
) -> list[DandiAsset | RefusedAsset]:
    """List a dandiset version's assets with their records, 1000 a page.

    The token comes from ``DANDI_API_TOKEN``. An entry with a malformed identifier comes
    as a :class:`RefusedAsset`, so the flow records it and goes on.
    """
    return list(
        api_client(api_base).assets(dandiset, path_glob=path_glob, page_size=LISTING_PAGE_SIZE)
    )


def api_client(api_base: str) -> DandiClient:
    """The shared client of one DANDI API in this process (made on first use, kept open).

    Keyed by the API and the ``DANDI_API_TOKEN`` in force, so a changed token gets a
    client of its own.
    """
    key = (api_base.rstrip("/"), os.environ.get("DANDI_API_TOKEN") or None)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = DandiClient(api_base, pool_size=_CLIENT_CONNECTIONS)
            _clients[key] = client
        return client


def describe_dandi_asset(asset: DandiAsset) -> DandiAsset:
    """The asset with its published size, digests and URLs.

    A request is sent only when the listing came without the asset's record.
    """
    return api_client(asset.api_base).complete(asset)


def load_streamed(record: DandiAsset, target: Target) -> Loaded:
    """Read a described asset's Units over HTTP range requests into a publishable form.

    Falls back to a verified download when streaming fails (with a counted warning).
    """
    load = partial(load_spikedata_from_dandi, record, allow_no_units=True, stream=True)
    return load_and_prepare(target, load)


def load_downloaded(path: str, target: Target) -> Loaded:
    """Load a downloaded asset's Units into a publishable form."""
    return load_and_prepare(target, partial(load_spikedata_from_nwb, path, allow_no_units=True))


def downloads_dir() -> Path:
    """The download area of the local cache."""
    return cache_dir() / "downloads"


def expire_downloads() -> list[Path]:
    """Delete partial downloads and temporaries of the download area past their age.

    The age limit is ``SPIKELAB_PARTIAL_MAX_AGE_HOURS`` (default 72 h); younger partial
    downloads stay and are resumed by the next download of the same asset.
    """
    return expire_stale_downloads(downloads_dir())


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
    fetch_asset(api_client(asset.api_base), asset, destination)
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
