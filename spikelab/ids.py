"""Identifiers users type, normalised once where they enter (no heavy imports here)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIX_DIGITS = re.compile(r"\d{6}")
_SHORT = re.compile(r"\d{1,5}")
DANDISET_VERSION = re.compile(r"draft|0\.\d{6}\.\d{1,4}")


def normalize_dandiset_id(dandiset_id: str | int) -> str:
    """Return the six-digit dandiset id; ``DANDI:000006`` is accepted too.

    Parameters
    ----------
    dandiset_id : str or int
        What the user wrote: ``000006``, ``DANDI:000006`` or ``dandi:000006``.

    Returns
    -------
    str
        Six digits.

    Raises
    ------
    ValueError
        The id is not six digits (``6`` gets a hint to write ``000006``).

    Examples
    --------
    >>> normalize_dandiset_id("DANDI:000006")
    '000006'
    """
    text = str(dandiset_id).strip().removeprefix("DANDI:").removeprefix("dandi:")
    if _SIX_DIGITS.fullmatch(text):
        return text
    if _SHORT.fullmatch(text):
        raise ValueError(
            f"dandiset id {dandiset_id!r} must have six digits: did you mean {int(text):06d}?"
        )
    raise ValueError(f"dandiset id {dandiset_id!r} is not a six-digit DANDI id like 000006")


def normalize_version(version: str) -> str:
    """Return a dandiset version: ``draft`` or a published ``0.YYMMDD.N``.

    Raises
    ------
    ValueError
        Any other text (it would become part of a URL).
    """
    text = str(version).strip()
    if not DANDISET_VERSION.fullmatch(text):
        raise ValueError(
            f"dandiset version {version!r} is neither 'draft' nor a published version "
            "like 0.231012.1234"
        )
    return text


@dataclass(frozen=True)
class DandisetRef:
    """A dandiset version, its id and version checked once where they enter.

    Build it with :meth:`parse`; everything downstream takes the value as it is.
    """

    dandiset_id: str
    version: str = "draft"

    @classmethod
    def parse(cls, dandiset_id: str | int, version: str = "draft") -> DandisetRef:
        """Check and normalise what a user or a flow parameter gave.

        Raises
        ------
        ValueError
            As :func:`normalize_dandiset_id` and :func:`normalize_version` do.
        """
        return cls(normalize_dandiset_id(dandiset_id), normalize_version(version))

    def __str__(self) -> str:
        return f"DANDI:{self.dandiset_id}/{self.version}"
