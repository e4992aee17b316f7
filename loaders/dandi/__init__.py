"""DANDI: list a dandiset's assets, load an NWB asset's Units, convert raw traces to Zarr.

Flows and tasks import these names from here; the private modules hold the REST client
(paged listings, one typed asset record) and the verified, resumable download.
"""

from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.dandi._download import (
    download_asset,
    expire_stale_downloads,
    fetch_asset,
    file_matches,
    safe_destination,
)
from spikelab.loaders.dandi._records import DEFAULT_API_BASE, DandiAsset, RefusedAsset
from spikelab.loaders.dandi.assets import (
    list_dandi_assets,
    load_recording_from_dandi,
    load_spikedata_from_dandi,
)

__all__ = [
    "DEFAULT_API_BASE",
    "DandiAsset",
    "DandiClient",
    "RefusedAsset",
    "download_asset",
    "expire_stale_downloads",
    "fetch_asset",
    "file_matches",
    "list_dandi_assets",
    "load_recording_from_dandi",
    "load_spikedata_from_dandi",
    "safe_destination",
]
