"""Loaders: one module per source, each a plain function returning SpikeData.

``LOADERS`` maps each source name to its loader function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spikelab.loaders.dandi import (
    list_dandi_assets,
    load_recording_from_dandi,
    load_spikedata_from_dandi,
)
from spikelab.loaders.hdf5 import load_spikedata_from_hdf5
from spikelab.loaders.hdf5_raw import load_spikedata_from_hdf5_raw_thresholded
from spikelab.loaders.kilosort import load_spikedata_from_kilosort
from spikelab.loaders.nwb import load_spikedata_from_nwb
from spikelab.loaders.pickle import load_spikedata_from_pickle
from spikelab.loaders.spikeinterface import (
    load_spikedata_from_spikeinterface,
    load_spikedata_from_spikeinterface_recording,
)
from spikelab.loaders.spikelab_npz import load_spikedata_from_spikelab_sorted_npz
from spikelab.spikedata import SpikeData

LOADERS: dict[str, Callable[..., SpikeData]] = {
    "dandi": load_spikedata_from_dandi,
    "hdf5": load_spikedata_from_hdf5,
    "hdf5_raw_thresholded": load_spikedata_from_hdf5_raw_thresholded,
    "kilosort": load_spikedata_from_kilosort,
    "nwb": load_spikedata_from_nwb,
    "pickle": load_spikedata_from_pickle,
    "spikeinterface": load_spikedata_from_spikeinterface,
    "spikeinterface_recording": load_spikedata_from_spikeinterface_recording,
    "spikelab_npz": load_spikedata_from_spikelab_sorted_npz,
}

__all__: list[Any] = [
    "LOADERS",
    "list_dandi_assets",
    "load_recording_from_dandi",
    "load_spikedata_from_dandi",
    "load_spikedata_from_hdf5",
    "load_spikedata_from_hdf5_raw_thresholded",
    "load_spikedata_from_kilosort",
    "load_spikedata_from_nwb",
    "load_spikedata_from_pickle",
    "load_spikedata_from_spikeinterface",
    "load_spikedata_from_spikeinterface_recording",
    "load_spikedata_from_spikelab_sorted_npz",
]
