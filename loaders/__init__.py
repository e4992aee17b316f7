"""Loaders: plain functions returning SpikeData, one module (or package) per source.

The sources with helpers of their own are packages: ``dandi`` (REST client, verified
download), ``nwb`` (pynwb and h5py readers, HTTP range reading) and ``ibl`` (ONE-api,
Brain-Wide Map table); ``formats`` tells which loader reads a local path.

``LOADERS`` maps each source name to its loader function; ``LOADER_VERSIONS`` gives each
one's output version, part of the pipeline's cache keys: bump it whenever a loader's output
for the same input changes.
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
from spikelab.loaders.ibl import load_spikedata_from_ibl, query_ibl_probes
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
    "ibl": load_spikedata_from_ibl,
    "kilosort": load_spikedata_from_kilosort,
    "nwb": load_spikedata_from_nwb,
    "pickle": load_spikedata_from_pickle,
    "spikeinterface": load_spikedata_from_spikeinterface,
    "spikeinterface_recording": load_spikedata_from_spikeinterface_recording,
    "spikelab_npz": load_spikedata_from_spikelab_sorted_npz,
}

LOADER_VERSIONS: dict[str, str] = {
    "dandi": "2",
    "hdf5": "2",  # fractional ragged indices refused (were truncated)
    "hdf5_raw_thresholded": "2",  # the file's start_time / length_ms attributes honoured
    "ibl": "2",  # electrodes_by_channel kept when one channel column is short
    "kilosort": "2",  # TSV columns named like loader keys renamed (text location -> label)
    "nwb": "2",
    "pickle": "1",
    "spikeinterface": "2",  # text location -> location_label, scalar location -> [x]
    "spikeinterface_recording": "1",
    "spikelab_npz": "1",
}

__all__: list[Any] = [
    "LOADERS",
    "LOADER_VERSIONS",
    "list_dandi_assets",
    "load_recording_from_dandi",
    "load_spikedata_from_dandi",
    "load_spikedata_from_hdf5",
    "load_spikedata_from_hdf5_raw_thresholded",
    "load_spikedata_from_ibl",
    "load_spikedata_from_kilosort",
    "load_spikedata_from_nwb",
    "load_spikedata_from_pickle",
    "load_spikedata_from_spikeinterface",
    "load_spikedata_from_spikeinterface_recording",
    "load_spikedata_from_spikelab_sorted_npz",
    "query_ibl_probes",
]
