"""Write SpikeData to a pickle file."""

from __future__ import annotations

import os
import pickle

from spikelab.io.atomic import atomic_write
from spikelab.spikedata import SpikeData


def export_to_pickle(sd: SpikeData, filepath: str | os.PathLike[str]) -> None:
    """Pickle ``sd`` to ``filepath`` (written to a temporary name, then renamed).

    Read it back with :func:`spikelab.loaders.load_spikedata_from_pickle`. If pickling
    fails (an attribute that cannot be pickled, say), nothing is left under ``filepath``
    and a file already there is kept unchanged.

    Parameters
    ----------
    sd : SpikeData
        The data to write.
    filepath : str or PathLike
        Destination file; missing parent folders are created, an existing file replaced.

    Raises
    ------
    TypeError
        If ``sd`` is not a SpikeData.
    pickle.PicklingError, AttributeError or TypeError
        Whatever :func:`pickle.dump` raises when something in ``sd`` (metadata,
        attributes) cannot be pickled: a lambda, a local function, an open file.
    """
    if not isinstance(sd, SpikeData):
        raise TypeError(f"export_to_pickle writes SpikeData, got {type(sd).__name__}")
    with atomic_write(filepath) as handle:
        pickle.dump(sd, handle, protocol=pickle.HIGHEST_PROTOCOL)
