import numpy as np
import pytest

from spikelab.units import check_sampling_rate, check_time_unit, ms_per, to_ms


@pytest.mark.parametrize(
    ("values", "unit", "fs", "expected"),
    [
        ([0.5, 1.25], "s", None, [500.0, 1250.0]),
        ([3.0, 4.5], "ms", None, [3.0, 4.5]),
        ([30, 45000], "samples", 30000.0, [1.0, 1500.0]),
        (np.array([1], dtype=np.uint64), "samples", 20000, [0.05]),
    ],
)
def test_to_ms_converts(values, unit, fs, expected):
    result = to_ms(values, unit, fs)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-12)


def test_to_ms_ms_returns_a_copy():
    original = np.array([1.0, 2.0])
    converted = to_ms(original, "ms")
    converted[0] = 99.0
    assert original[0] == 1.0


@pytest.mark.parametrize(
    ("unit", "fs", "match"),
    [
        ("sec", None, "unknown time unit 'sec'"),
        ("us", 1000.0, "unknown time unit 'us'"),
        ("samples", None, "fs_Hz is required"),
        ("samples", 0, "positive and finite"),
        ("samples", -5.0, "positive and finite"),
        ("samples", float("nan"), "positive and finite"),
        ("samples", float("inf"), "positive and finite"),
        ("samples", "fast", "must be a number"),
    ],
)
def test_bad_units_and_rates_raise(unit, fs, match):
    with pytest.raises(ValueError, match=match):
        check_time_unit(unit, fs)
    with pytest.raises(ValueError, match=match):
        to_ms([1.0], unit, fs)
    with pytest.raises(ValueError, match=match):
        ms_per(unit, fs)


def test_ms_per_unit():
    assert (ms_per("s"), ms_per("ms"), ms_per("samples", 20000)) == (1000.0, 1.0, 0.05)


def test_rate_is_returned_as_float():
    assert check_sampling_rate(np.int64(30000)) == 30000.0
