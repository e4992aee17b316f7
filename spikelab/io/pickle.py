"""Write SpikeData to a pickle file."""

from __future__ import annotations

import os
import pickle

from spikelab.io.atomic import atomic_write
from spikelab.spikedata import SpikeData


def export_to_pickle(sd: SpikeData, filepath: str | os.PathLike[str]) -> None:
    """Pickle ``sd`` to ``filepath`` (written to a temporary name, then renamed).

    Read it back with :func:`spikelab.loaders.load_spikedata_from_pickle`.

    Raises
    ------
    TypeError
        If ``sd`` is not a SpikeData.
    """
    if not isinstance(sd, SpikeData):
        raise TypeError(f"export_to_pickle writes SpikeData, got {type(sd).__name__}")
    with atomic_write(filepath) as handle:
        pickle.dump(sd, handle, protocol=pickle.HIGHEST_PROTOCOL)
