"""The upstream import path: ``spikelab.data_loaders.data_loaders.<loader>``.

Re-exports every loader of :mod:`spikelab.loaders` so code written for the upstream
SpikeLab loaders runs unchanged.
"""

from spikelab.io.nwb import export_spikedata_to_nwb
from spikelab.io.pickle import export_to_pickle
from spikelab.loaders import *  # noqa: F403
from spikelab.loaders import __all__ as _loader_names

__all__ = [*_loader_names, "export_spikedata_to_nwb", "export_to_pickle"]
