"""normalise_quality: Phy/KiloSort labels, IBL label scores and NWB free text."""

import numpy as np
import pytest

from spikelab.unit_quality import QUALITIES, normalise_quality


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Phy cluster_group.tsv `group` and KiloSort cluster_KSLabel.tsv `KSLabel`
        ("good", "good"),
        ("mua", "mua"),
        ("noise", "noise"),
        ("unsorted", None),
        # IBL clusters.label: the fraction of three QC metrics passed; only 1 is good
        (1, "good"),
        (1.0, "good"),
        (np.float64(1.0), "good"),
        (np.int64(1), "good"),
        ("1.0", "good"),
        (0, None),
        (1 / 3, None),
        (2 / 3, None),
        (np.float32(0.6666667), None),
        (float("nan"), None),
        (float("inf"), None),
        # NWB free-text `quality`
        ("Good", "good"),
        ("GOOD", "good"),
        ("good unit", "good"),
        ("single unit", "good"),
        ("Single-unit", "good"),
        ("SU", "good"),
        ("single", "good"),
        ("multi-unit", "mua"),
        ("Multi_Unit", "mua"),
        ("MUA", "mua"),
        ("multi", "mua"),
        ("multiunit", "mua"),
        ("artifact", "noise"),
        ("Noise", "noise"),
        (b"good", "good"),
        (" mua ", "mua"),
        # nothing clear
        ("fair", None),
        ("ok", None),
        ("2", None),
        ("", None),
        (None, None),
        (True, None),
        (np.bool_(True), None),
        (b"\xff", None),
        (["good"], None),
    ],
)
def test_normalise_quality(value, expected):
    assert normalise_quality(value) == expected


def test_every_result_is_a_known_quality():
    assert QUALITIES == ("good", "mua", "noise")
    for value in ("good", "mua", "noise", "SU", "multi", "artifact", 1.0):
        assert normalise_quality(value) in QUALITIES
