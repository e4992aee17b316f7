"""Convert spike and sample times to milliseconds, the time base of SpikeData."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

TIME_UNITS = ("s", "ms", "samples")

_MS_PER_UNIT = {"s": 1000.0, "ms": 1.0}


def check_time_unit(unit: str, fs_Hz: float | None = None) -> None:
    """Reject an unknown time unit, or ``'samples'`` without a usable sampling rate.

    Loaders call this before opening any file, so a wrong argument fails fast.

    Parameters
    ----------
    unit : str
        One of ``'s'``, ``'ms'`` or ``'samples'``.
    fs_Hz : float | None, default: None
        Sampling rate in Hz; required when ``unit`` is ``'samples'``.

    Raises
    ------
    ValueError
        If the unit is unknown, or ``'samples'`` comes without a positive, finite ``fs_Hz``.
    """
    if unit not in TIME_UNITS:
        raise ValueError(f"unknown time unit {unit!r}: use one of {', '.join(TIME_UNITS)}")
    if unit == "samples":
        check_sampling_rate(fs_Hz, what="converting times given in samples")


def check_sampling_rate(
    fs_Hz: float | None, *, what: str = "this input", name: str = "fs_Hz"
) -> float:
    """Return ``fs_Hz`` as a float, or raise if it is missing, non-positive or not finite.

    Parameters
    ----------
    fs_Hz : float | None
        The sampling rate in Hz.
    what : str, default: "this input"
        What needs the rate, for the message when it is missing.
    name : str, default: "fs_Hz"
        How the messages call the rate (e.g. ``"sampling_frequency"``).

    Raises
    ------
    ValueError
        If ``fs_Hz`` is None, zero, negative, NaN or infinite.
    """
    if fs_Hz is None:
        raise ValueError(
            f"{name} is required for {what}: it must be a positive, finite sampling rate in Hz"
        )
    try:
        rate = float(fs_Hz)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of Hz, got {fs_Hz!r}") from None
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{name} must be positive and finite, got {fs_Hz!r}")
    return rate


def ms_per(unit: str, fs_Hz: float | None = None) -> float:
    """How many milliseconds one ``unit`` is (``fs_Hz`` is needed for ``'samples'``).

    Raises
    ------
    ValueError
        Unknown unit, or samples without a valid ``fs_Hz``.
    """
    check_time_unit(unit, fs_Hz)
    return 1000.0 / float(fs_Hz) if unit == "samples" else _MS_PER_UNIT[unit]  # type: ignore[arg-type]


def to_ms(
    values: ArrayLike, unit: str, fs_Hz: float | None = None, *, copy: bool = True
) -> NDArray[np.float64]:
    """Convert times in ``unit`` to milliseconds as float64.

    Parameters
    ----------
    values : array_like
        Times in ``unit``.
    unit : str
        ``'s'``, ``'ms'`` or ``'samples'``.
    fs_Hz : float | None, default: None
        Sampling rate in Hz; required for ``'samples'``.
    copy : bool, default: True
        False converts a float64 array in place (no second copy of a large array).

    Returns
    -------
    numpy.ndarray
        The times in ms (float64). Nothing is rounded.

    Raises
    ------
    ValueError
        Unknown unit, or samples without a valid ``fs_Hz``.

    Examples
    --------
    >>> to_ms([1, 2], "samples", fs_Hz=20000.0).tolist()
    [0.05, 0.1]
    """
    factor = ms_per(unit, fs_Hz)
    array = np.asarray(values, dtype=np.float64)
    if not copy and isinstance(values, np.ndarray) and values.dtype == np.float64:
        array *= factor
        return array
    return array * factor
