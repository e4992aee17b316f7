"""Session fields: ISO 8601 ages, sex codes and species names as NWB and DANDI write them."""

import pytest

from spikelab.session_fields import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    age_days,
    normalise_sex,
    normalise_species,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("P90D", 90.0),
        ("P12W", 84.0),
        ("P3M", 3 * DAYS_PER_MONTH),
        ("P1Y", DAYS_PER_YEAR),
        ("P1Y2M", DAYS_PER_YEAR + 2 * DAYS_PER_MONTH),
        ("P1Y2M3W4D", DAYS_PER_YEAR + 2 * DAYS_PER_MONTH + 21 + 4),
        ("P2DT12H", 2.5),
        ("PT36H", 1.5),
        ("P2.5M", 2.5 * DAYS_PER_MONTH),
        ("P2,5M", 2.5 * DAYS_PER_MONTH),
        ("p90d", 90.0),
        (" P90D ", 90.0),
        ("P90D/P100D", 90.0),  # a range gives its lower bound
        ("P8W/P12W", 56.0),
        ("P90D/", 90.0),  # NWB 2.6 open range
        ("P0D", 0.0),
        ("P", None),
        ("PT", None),
        ("P1YT", None),
        ("/P100D", None),
        ("P90D/junk", None),
        ("90 days", None),
        ("P-5D", None),
        ("unknown", None),
        ("", None),
        (None, None),
    ],
)
def test_age_days(value, expected):
    result = age_days(value)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


def test_months_and_years_in_days():
    assert (DAYS_PER_MONTH, DAYS_PER_YEAR) == (30.44, 365.25)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("M", "M"),
        ("male", "M"),
        ("Female", "F"),
        ("f", "F"),
        ("U", "U"),
        ("unknown", "U"),
        ("O", "O"),
        ("other", "O"),
        ("", None),
        ("hermaphrodite", None),
        (None, None),
    ],
)
def test_normalise_sex(value, expected):
    assert normalise_sex(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mus musculus", "Mus musculus"),
        ("mus musculus", "Mus musculus"),
        ("mouse", "Mus musculus"),
        ("Mus musculus - House mouse", "Mus musculus"),
        ("House mouse", "Mus musculus"),
        ("http://purl.obolibrary.org/obo/NCBITaxon_10090", "Mus musculus"),
        ("NCBITaxon:10090", "Mus musculus"),
        ("Mus musculus C57BL/6J", "Mus musculus"),
        ("C57BL/6J", "Mus musculus"),
        ("Rattus norvegicus", "Rattus norvegicus"),
        ("Rattus norvegicus - Norway rat", "Rattus norvegicus"),
        ("rat", "Rattus norvegicus"),
        ("Long Evans", "Rattus norvegicus"),
        ("Sprague-Dawley", "Rattus norvegicus"),
        ("Macaca mulatta - Rhesus monkey", "Macaca mulatta"),
        ("rhesus macaque", "Macaca mulatta"),
        ("Homo sapiens", "Homo sapiens"),
        ("human", "Homo sapiens"),
        ("Microcebus  murinus", "Microcebus murinus"),  # not in our list: kept, spaces tidied
        ("unknown", None),
        ("n/a", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_species(value, expected):
    assert normalise_species(value) == expected
