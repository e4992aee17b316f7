"""One cached Prefect task per loader: load, then stage the units table and raster locally.

The tasks return small references (paths and summaries), never SpikeData, so nothing large
goes through Prefect's result storage. Their cache keys come from the content's identity
(see :func:`spikelab.tasks._policy.content_cache_key`).
"""

from __future__ import annotations

import uuid
from typing import Any, TypedDict

from prefect import task

from spikelab.io.json_codec import to_plain
from spikelab.io.manifest import spikedata_summary
from spikelab.io.raster_plot import write_raster_png
from spikelab.io.units_table import write_units_table
from spikelab.loaders import (
    load_spikedata_from_dandi,
    load_spikedata_from_hdf5,
    load_spikedata_from_kilosort,
    load_spikedata_from_nwb,
    load_spikedata_from_pickle,
    load_spikedata_from_spikelab_sorted_npz,
)
from spikelab.spikedata import SpikeData
from spikelab.tasks._policy import cache_dir, content_cache_key


class Target(TypedDict):
    """Where an asset goes in the lake."""

    source: str
    dataset_id: str
    asset_id: str


class StagedUnits(TypedDict):
    """A loaded asset, staged locally and ready to publish into the lake."""

    units_path: str
    raster_path: str
    spikedata: dict[str, Any]
    metadata: dict[str, Any]


def stage(sd: SpikeData, target: Target) -> StagedUnits:
    """Write ``sd``'s units table and raster plot into the local staging area."""
    folder = cache_dir() / "staged"
    name = uuid.uuid4().hex
    units = write_units_table(sd, folder / f"{name}.parquet", **target)
    raster = write_raster_png(
        sd,
        folder / f"{name}.png",
        title=f"{target['source']} {target['dataset_id']} {target['asset_id']}",
    )
    return {
        "units_path": units["path"],
        "raster_path": raster,
        "spikedata": spikedata_summary(sd),
        "metadata": to_plain(sd.metadata),
    }


_CACHED: dict[str, Any] = {"persist_result": True}


@task(name="load-nwb", cache_key_fn=content_cache_key("nwb"), **_CACHED)
def load_nwb(
    path: str, target: Target, content_id: str, allow_no_units: bool = False
) -> StagedUnits:
    """Load an NWB file's Units."""
    return stage(load_spikedata_from_nwb(path, allow_no_units=allow_no_units), target)


@task(name="load-dandi-streamed", cache_key_fn=content_cache_key("dandi"), **_CACHED)
def load_dandi_streamed(
    asset_id: str, api_base: str, target: Target, content_id: str, version: str
) -> StagedUnits:
    """Load a DANDI asset's Units over HTTP range requests (downloading only on failure).

    The token, if any, comes from ``DANDI_API_TOKEN``.
    """
    sd = load_spikedata_from_dandi(
        asset_id,
        dandiset_id=target["dataset_id"],
        version=version,
        api_base=api_base,
        allow_no_units=True,
        stream=True,
    )
    return stage(sd, target)


@task(name="load-kilosort", cache_key_fn=content_cache_key("kilosort"), **_CACHED)
def load_kilosort(
    path: str, target: Target, content_id: str, options: dict[str, Any]
) -> StagedUnits:
    """Load a KiloSort/Phy folder (``options`` go to the loader, e.g. ``fs_Hz``)."""
    return stage(load_spikedata_from_kilosort(path, **options), target)


@task(name="load-hdf5", cache_key_fn=content_cache_key("hdf5"), **_CACHED)
def load_hdf5(path: str, target: Target, content_id: str, options: dict[str, Any]) -> StagedUnits:
    """Load a generic HDF5 spike file (``options`` name its style's datasets)."""
    return stage(load_spikedata_from_hdf5(path, **options), target)


@task(name="load-spikelab-npz", cache_key_fn=content_cache_key("spikelab_npz"), **_CACHED)
def load_spikelab_npz(path: str, target: Target, content_id: str) -> StagedUnits:
    """Load a SpikeLab sorted ``.npz`` (trusted files only: it unpickles)."""
    return stage(load_spikedata_from_spikelab_sorted_npz(path), target)


@task(name="load-pickle", cache_key_fn=content_cache_key("pickle"), **_CACHED)
def load_pickle(path: str, target: Target, content_id: str) -> StagedUnits:
    """Load a pickled SpikeData (trusted files only)."""
    return stage(load_spikedata_from_pickle(path), target)
