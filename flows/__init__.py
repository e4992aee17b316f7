"""Prefect flows: ingest DANDI dandisets, IBL probes and local files into the lake."""

from spikelab.flows._runs import run_summary
from spikelab.flows.dandi import ingest_dandiset, ingest_dandisets
from spikelab.flows.files import ingest_files
from spikelab.flows.ibl import ingest_ibl_region

__all__ = [
    "ingest_dandiset",
    "ingest_dandisets",
    "ingest_files",
    "ingest_ibl_region",
    "run_summary",
]
