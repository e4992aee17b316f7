"""IBL: Brain-Wide Map probes, queried from its unit table and loaded through ONE-api.

``query`` finds probes from the units table alone; ``load`` reads one probe through ONE.
The private modules here read the Brain-Wide Map unit table (from ``brainwidemap`` when
it is importable, else from the IBL public S3 bucket) and turn ONE's records and ALF
arrays into SpikeData metadata.
"""

from spikelab.loaders.ibl._bwm_units import (
    DEFAULT_TAG,
    OPENALYX_URL,
    alyx_login,
    bwm_units,
    default_one,
)
from spikelab.loaders.ibl.load import load_spikedata_from_ibl
from spikelab.loaders.ibl.query import query_ibl_probes

__all__ = [
    "DEFAULT_TAG",
    "OPENALYX_URL",
    "alyx_login",
    "bwm_units",
    "default_one",
    "load_spikedata_from_ibl",
    "query_ibl_probes",
]
