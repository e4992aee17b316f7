"""The word lists users choose from, written once (no heavy imports: the CLI parser uses them).

Each is a ``Literal`` type, so flow parameters and configs are checked against it and the
Prefect UI shows a choice; ``typing.get_args`` gives the words to the command line.
"""

from __future__ import annotations

from typing import Literal

Transfer = Literal["stream", "download"]
TaskRunnerName = Literal["threads", "dask"]
Source = Literal["dandi", "ibl", "files"]
# What the files flow reads; each name but "auto" is a local format of the loader registry
# (spikelab.loaders.SOURCES), which a test keeps in step.
FileFormat = Literal["auto", "nwb", "kilosort", "hdf5", "spikelab_npz", "pickle"]
