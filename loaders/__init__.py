"""Loaders: plain functions returning SpikeData, one module (or package) per source.

The sources with helpers of their own are packages: ``dandi`` (REST client, verified
download), ``nwb`` (pynwb and h5py readers, HTTP range reading) and ``ibl`` (ONE-api,
Brain-Wide Map table); ``formats`` tells which loader reads a local path.

``SOURCES`` is the one registry: one written-out entry per source (name, loader function,
loader version, the file suffixes it reads, its other public functions). Everything else is
derived from it: ``LOADERS`` maps each source name to its loader function;
``LOADER_VERSIONS`` gives each one's output version, part of the pipeline's cache keys (bump
it whenever a loader's output for the same input changes); ``__all__`` names every loader
and helper; ``formats.FORMATS`` and the suffix table list the local formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Source:
    """One source spikelab reads, as the registry lists it.

    Parameters
    ----------
    name : str
        The source's name: the key of ``LOADERS`` and ``LOADER_VERSIONS``, and the
        ``--format`` word of ``spikelab ingest files`` when ``local_format`` is true.
    loader : Callable[..., SpikeData]
        The plain function that reads the source.
    version : str
        The loader's output version, part of the pipeline's cache keys: bump it whenever
        the loader's output for the same input changes.
    suffixes : tuple of str, default: ()
        File suffixes that name this format when ``ingest files`` sniffs a path.
    local_format : bool, default: False
        Whether ``ingest files`` reads it from a local path (``formats.FORMATS``).
    helpers : tuple of Callable, default: ()
        The source's other public functions (listing, recordings, queries), exported beside
        the loader.
    """

    name: str
    loader: Callable[..., SpikeData]
    version: str
    suffixes: tuple[str, ...] = ()
    local_format: bool = False
    helpers: tuple[Callable[..., Any], ...] = ()


# The one registry: every other list below is derived from it. The local formats come first,
# in the order `ingest files --format` lists them; then the sources read from elsewhere.
SOURCES: tuple[Source, ...] = (
    Source(
        "nwb",
        load_spikedata_from_nwb,
        "2",
        suffixes=(".nwb",),  # an .h5 file holding units/spike_times is sniffed as NWB too
        local_format=True,
    ),
    Source(
        "kilosort",
        load_spikedata_from_kilosort,
        "2",  # TSV columns named like loader keys renamed (text location -> label)
        local_format=True,  # a folder, told by its spike_times.npy
    ),
    Source(
        "hdf5",
        load_spikedata_from_hdf5,
        "2",  # fractional ragged indices refused (were truncated)
        suffixes=(".h5", ".hdf5"),
        local_format=True,
    ),
    Source(
        "spikelab_npz",
        load_spikedata_from_spikelab_sorted_npz,
        "1",
        suffixes=(".npz",),
        local_format=True,
    ),
    Source(
        "pickle",
        load_spikedata_from_pickle,
        "1",
        suffixes=(".p", ".pkl", ".pickle"),
        local_format=True,
    ),
    Source(
        "dandi",
        load_spikedata_from_dandi,
        "2",
        helpers=(list_dandi_assets, load_recording_from_dandi),
    ),
    Source(
        "hdf5_raw_thresholded",
        load_spikedata_from_hdf5_raw_thresholded,
        "2",  # the file's start_time / length_ms attributes honoured
    ),
    Source(
        "ibl",
        load_spikedata_from_ibl,
        "2",  # electrodes_by_channel kept when one channel column is short
        helpers=(query_ibl_probes,),
    ),
    Source(
        "spikeinterface",
        load_spikedata_from_spikeinterface,
        "2",  # text location -> location_label, scalar location -> [x]
    ),
    Source("spikeinterface_recording", load_spikedata_from_spikeinterface_recording, "1"),
)

_BY_NAME = sorted(SOURCES, key=lambda source: source.name)

LOADERS: dict[str, Callable[..., SpikeData]] = {source.name: source.loader for source in _BY_NAME}
LOADER_VERSIONS: dict[str, str] = {source.name: source.version for source in _BY_NAME}

# The public functions, re-exported by spikelab.data_loaders.data_loaders (the seed API);
# the registry itself is imported by name (``from spikelab.loaders import SOURCES``).
__all__: list[str] = [
    "LOADERS",
    "LOADER_VERSIONS",
    *sorted(
        function.__name__ for source in SOURCES for function in (source.loader, *source.helpers)
    ),
]
