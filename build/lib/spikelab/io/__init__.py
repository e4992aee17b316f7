"""Writers and readers of spikelab's outputs."""

from spikelab.io.nwb import export_spikedata_to_nwb
from spikelab.io.pickle import export_to_pickle

__all__ = ["export_spikedata_to_nwb", "export_to_pickle"]
