"""NWB: the Units table and session metadata of local, remote (streamed) and Zarr files.

Read with pynwb when it is installed and the file is readable by it, otherwise straight
from HDF5 with h5py; the private modules here hold the two readers, the checks they share
and the HTTP range reading of a remote file.
"""

from spikelab.loaders.nwb._table import SESSION_KEYS
from spikelab.loaders.nwb.reader import (
    has_electrical_series,
    load_remote_nwb,
    load_spikedata_from_nwb,
)

__all__ = ["SESSION_KEYS", "has_electrical_series", "load_remote_nwb", "load_spikedata_from_nwb"]
