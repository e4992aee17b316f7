"""Writers and readers of spikelab's outputs."""

from spikelab.io.pickle import export_to_pickle

__all__ = ["export_to_pickle"]
