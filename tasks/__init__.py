"""Prefect tasks: thin wrappers around the loaders and writers (retries, cache keys, logging)."""

from spikelab.tasks._policy import cache_dir
from spikelab.tasks.dandi import describe_dandi_asset, download_dandi_asset, list_dandi_assets
from spikelab.tasks.ibl import load_ibl_probe, query_ibl_probes
from spikelab.tasks.load import load_and_prepare
from spikelab.tasks.outputs import convert_raw_to_zarr, prepare_publication

__all__ = [
    "cache_dir",
    "convert_raw_to_zarr",
    "describe_dandi_asset",
    "download_dandi_asset",
    "list_dandi_assets",
    "load_and_prepare",
    "load_ibl_probe",
    "prepare_publication",
    "query_ibl_probes",
]
