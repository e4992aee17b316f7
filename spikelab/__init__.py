"""spikelab: spike data from every common source into SpikeData and a Parquet lake."""

import os

# deltalake's built-in allocator (jemalloc) keeps the pages it frees for ten seconds by
# default, so a publisher committing several times a second holds many it no longer uses:
# hand them back at once, unless the user configured it (benchmarks/bench_archive.py
# measures the flow's memory at 1,000 and 10,000 assets). Read when deltalake is imported.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")

from spikelab.spikedata import SpikeData  # noqa: E402

__all__ = ["SpikeData"]
__version__ = "0.1.0"
