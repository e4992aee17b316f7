"""Normalise a unit's curation label to ``good``, ``mua``, ``noise`` or None.

Sources and their encodings:

- Phy / KiloSort: ``cluster_group.tsv`` (``group``) and ``cluster_KSLabel.tsv`` (``KSLabel``)
  hold ``good``, ``mua``, ``noise`` or ``unsorted``. ``unsorted`` means nobody decided: None.
- IBL: ``clusters.label`` (the ``label`` column of the units table) is the fraction of the three
  single-unit QC metrics a cluster passes (amplitude, noise cut-off, refractory period), so it
  is 0, 1/3, 2/3 or 1. Only 1 is IBL's "good" unit; a partial score says the unit failed a
  test, not that it is multi-unit activity or noise, so it gives None.
- NWB: a free-text ``quality`` column. Values that clearly say one of the three are mapped
  (``"Good"``, ``"good unit"``, ``"single unit"``, ``"SU"``, ``"single"`` → good;
  ``"multi-unit"``, ``"MUA"``, ``"multi"`` → mua; ``"noise"``, ``"artifact"`` → noise);
  anything else (``"fair"``, ``"ok"``, ``"2"``) gives None.

The caller keeps the raw value beside the normalised one.
"""

from __future__ import annotations

import numbers
from typing import Literal

__all__ = ["QUALITIES", "Quality", "normalise_quality"]

Quality = Literal["good", "mua", "noise"]

QUALITIES: tuple[Quality, ...] = ("good", "mua", "noise")

_TEXT: dict[str, Quality] = {
    "good": "good",
    "good unit": "good",
    "single unit": "good",
    "single": "good",
    "su": "good",
    "sua": "good",
    "single unit activity": "good",
    "mua": "mua",
    "mu": "mua",
    "multi": "mua",
    "multi unit": "mua",
    "multiunit": "mua",
    "multi unit activity": "mua",
    "multiunit activity": "mua",
    "noise": "noise",
    "noise unit": "noise",
    "artifact": "noise",
    "artefact": "noise",
}


def _text_key(text: str) -> str:
    return " ".join(text.strip().lower().replace("-", " ").replace("_", " ").split())


def normalise_quality(value: object) -> Quality | None:
    """Return ``"good"``, ``"mua"``, ``"noise"`` or None for a unit's curation label.

    Parameters
    ----------
    value : object
        A Phy/KiloSort ``group`` or ``KSLabel`` value, an IBL ``label`` (a number), or an NWB
        ``quality`` value; str, bytes, a number, or None.

    Returns
    -------
    {"good", "mua", "noise"} | None
        The quality, or None when the value does not clearly say one of them: missing or
        NaN, ``"unsorted"``, an IBL label below 1, free text such as ``"fair"``, a boolean.

    Examples
    --------
    >>> normalise_quality("Multi-unit")
    'mua'
    >>> normalise_quality(1.0)
    'good'
    >>> normalise_quality(2 / 3) is None
    True
    """
    if value is None or isinstance(value, bool) or type(value).__name__ == "bool_":
        return None  # a boolean (numpy's too) is not a documented quality encoding
    if isinstance(value, bytes | bytearray):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str):
        key = _text_key(value)
        if key in _TEXT:
            return _TEXT[key]
        try:
            value = float(key)  # an IBL label written as text ("1", "1.0")
        except ValueError:
            return None
    if isinstance(value, numbers.Real):
        return "good" if float(value) == 1.0 else None  # NaN and inf compare unequal
    return None
