"""spikelab: spike data from every common source into SpikeData and a Parquet lake."""

from spikelab.spikedata import SpikeData

__all__ = ["SpikeData"]
__version__ = "0.1.0"
