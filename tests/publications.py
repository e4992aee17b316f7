"""Pending publications for the publisher's tests: a two-unit asset of the files source."""

import numpy as np

from spikelab.io.manifest import build_manifest, spikedata_summary
from spikelab.io.units_table import units_arrow_table
from spikelab.spikedata import SpikeData


def pending(asset_id, raster=b"\x89PNG raster", quality=0.5):
    """A pending publication of asset ``asset_id`` (dataset ``p``) with this raster and quality."""
    target = {"source": "files", "dataset_id": "p", "asset_id": asset_id}
    sd = SpikeData(
        [np.array([1.0, 2.0]), np.array([3.0])],
        length=10.0,
        neuron_attributes=[{"quality": quality}, {"quality": quality}],
    )
    return {
        "target": target,
        "status": "ok",
        "units": units_arrow_table(sd, **target),
        "manifest": build_manifest(**target, status="ok", spikedata=spikedata_summary(sd)),
        "outputs": [],
        "raster": raster,
        "seconds": 0.5,
        "note": None,
    }
