"""Normalise session metadata as NWB and DANDI write it: age, sex, species.

Every function takes the raw value found in a file (or ``None``) and returns the normalised
value, or ``None`` when the raw value says nothing usable. None of them raises on bad
input: a session table keeps the raw value beside the normalised one, so an unparseable
value is recorded, not fatal.
"""

from __future__ import annotations

import math
import re
from typing import Literal

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_WEEK",
    "DAYS_PER_YEAR",
    "age_days",
    "normalise_sex",
    "normalise_species",
]

DAYS_PER_WEEK = 7.0
DAYS_PER_MONTH = 30.44  # a mean Gregorian month (365.25 / 12 = 30.4375, rounded)
DAYS_PER_YEAR = 365.25
_SECONDS_PER_DAY = 86400.0

# ISO 8601 duration: PnYnMnWnDTnHnMnS, any part optional, decimals allowed (comma or dot).
_NUMBER = r"(\d+(?:[.,]\d+)?)"
_DURATION = re.compile(
    rf"^P(?:{_NUMBER}Y)?(?:{_NUMBER}M)?(?:{_NUMBER}W)?(?:{_NUMBER}D)?"
    rf"(?:T(?:{_NUMBER}H)?(?:{_NUMBER}M)?(?:{_NUMBER}S)?)?$"
)


def _duration_days(text: str) -> float | None:
    match = _DURATION.match(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        return None
    years, months, weeks, days, hours, minutes, seconds = (
        float(part.replace(",", ".")) if part is not None else 0.0 for part in match.groups()
    )
    return (
        years * DAYS_PER_YEAR
        + months * DAYS_PER_MONTH
        + weeks * DAYS_PER_WEEK
        + days
        + (hours * 3600.0 + minutes * 60.0 + seconds) / _SECONDS_PER_DAY
    )


def age_days(iso_duration: str | None) -> float | None:
    """Return an age in days from an ISO 8601 duration as NWB writes ``subject.age``.

    Accepted forms: ``P90D``, ``P12W``, ``P3M``, ``P1Y2M``, ``P2DT12H``, decimals (``P2.5M``),
    lower-case letters, and ranges ``P90D/P100D`` or open ranges ``P90D/`` (NWB 2.6), which
    give the lower bound. Months count 30.44 days and years 365.25 days. The separate
    ``subject.age__reference`` attribute ("birth" or "gestational") is not part of the
    string and does not change the number.

    Parameters
    ----------
    iso_duration : str | None
        The ``age`` value of an NWB subject.

    Returns
    -------
    float | None
        The age (or the lower bound of the range) in days, or None for a missing, empty or
        unparseable value (``"unknown"``, ``"90 days"``, ``"P"``, a negative age).

    Examples
    --------
    >>> age_days("P12W")
    84.0
    >>> age_days("P90D/P100D")
    90.0
    >>> age_days("adult") is None
    True
    """
    if iso_duration is None:
        return None
    text = str(iso_duration).strip().upper().replace(" ", "")
    if not text:
        return None
    lower, sep, upper = text.partition("/")
    if sep and not lower:
        return None  # "/P100D": no lower bound, and an upper bound is not an age
    days = _duration_days(lower)
    if days is None or not math.isfinite(days):
        return None
    if sep and upper and _duration_days(upper) is None:
        return None  # "P90D/junk" is not a range NWB would write
    return days


Sex = Literal["M", "F", "U", "O"]

_SEX = {
    "m": "M",
    "male": "M",
    "f": "F",
    "female": "F",
    "u": "U",
    "unknown": "U",
    "o": "O",
    "other": "O",
}


def normalise_sex(value: str | None) -> Sex | None:
    """Return the NWB sex code (``M``, ``F``, ``U`` or ``O``) for a sex value.

    NWB recommends the single letters; files also hold ``"male"``, ``"Female"`` and the like.

    Parameters
    ----------
    value : str | None
        The ``sex`` value of an NWB subject.

    Returns
    -------
    {"M", "F", "U", "O"} | None
        The code, or None for a missing, empty or unrecognised value.
    """
    if value is None:
        return None
    return _SEX.get(str(value).strip().lower())  # type: ignore[return-value]


# Common and NCBI names of the species met in DANDI ecephys, folded to their binomial.
_SPECIES = {
    "mus musculus": "Mus musculus",
    "mouse": "Mus musculus",
    "mice": "Mus musculus",
    "house mouse": "Mus musculus",
    "ncbitaxon_10090": "Mus musculus",
    "rattus norvegicus": "Rattus norvegicus",
    "rattus": "Rattus norvegicus",
    "rat": "Rattus norvegicus",
    "norway rat": "Rattus norvegicus",
    "brown rat": "Rattus norvegicus",
    "ncbitaxon_10116": "Rattus norvegicus",
    "macaca mulatta": "Macaca mulatta",
    "rhesus monkey": "Macaca mulatta",
    "rhesus macaque": "Macaca mulatta",
    "ncbitaxon_9544": "Macaca mulatta",
    "macaca fascicularis": "Macaca fascicularis",
    "ncbitaxon_9541": "Macaca fascicularis",
    "macaca nemestrina": "Macaca nemestrina",
    "homo sapiens": "Homo sapiens",
    "human": "Homo sapiens",
    "ncbitaxon_9606": "Homo sapiens",
    "callithrix jacchus": "Callithrix jacchus",
    "marmoset": "Callithrix jacchus",
    "ncbitaxon_9483": "Callithrix jacchus",
    "mustela putorius furo": "Mustela putorius furo",
    "ferret": "Mustela putorius furo",
    "danio rerio": "Danio rerio",
    "zebrafish": "Danio rerio",
    "drosophila melanogaster": "Drosophila melanogaster",
    "taeniopygia guttata": "Taeniopygia guttata",
    "zebra finch": "Taeniopygia guttata",
}

# Laboratory strains written in place of the species (the start of the value).
_STRAINS = (
    ("c57bl", "Mus musculus"),
    ("long evans", "Rattus norvegicus"),
    ("long-evans", "Rattus norvegicus"),
    ("sprague dawley", "Rattus norvegicus"),
    ("sprague-dawley", "Rattus norvegicus"),
    ("wistar", "Rattus norvegicus"),
    ("lister hooded", "Rattus norvegicus"),
)

_MISSING = frozenset({"", "unknown", "none", "nan", "n/a", "na", "null", "unspecified"})


def normalise_species(value: str | None) -> str | None:
    """Return the binomial name of a species value as NWB and DANDI write it.

    Recognises binomials in any case (``"mus musculus"``), common names (``"mouse"``,
    ``"Rat"``), DANDI's ``"Mus musculus - House mouse"`` form, NCBI taxonomy ids and URLs
    (``"http://purl.obolibrary.org/obo/NCBITaxon_10090"``) and sub-species or strains after
    the binomial (``"Mus musculus C57BL/6J"``), and a few laboratory strains written alone
    (``"C57BL/6J"``, ``"Long Evans"``, ``"Sprague-Dawley"``, ``"Wistar"``). An unrecognised
    non-empty value is returned stripped, unchanged: it still names a species, only not one
    in our list.

    Parameters
    ----------
    value : str | None
        The ``species`` value of an NWB subject or a DANDI asset.

    Returns
    -------
    str | None
        The binomial (``"Mus musculus"``, ``"Rattus norvegicus"``, ``"Macaca mulatta"``...),
        the stripped input when it is not in our list, or None when the value is missing or a
        placeholder (``""``, ``"unknown"``, ``"n/a"``).
    """
    if value is None:
        return None
    text = " ".join(str(value).split())
    if text.lower() in _MISSING:
        return None
    key = text.lower()
    if "ncbitaxon" in key:
        key = "ncbitaxon_" + key.rsplit("ncbitaxon", 1)[1].lstrip("_:")
    candidates = (key, key.split(" - ", 1)[0].strip(), " ".join(key.split()[:2]))
    for candidate in candidates:
        if candidate in _SPECIES:
            return _SPECIES[candidate]
    for strain, species in _STRAINS:
        if key.startswith(strain):
            return species
    return text
