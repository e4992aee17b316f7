"""Spike detection on raw traces: zero-phase band-pass filter, then a per-channel threshold.

Traces are read in chunks along time, each widened by enough samples that the filter has
settled at the chunk's edges, so the result equals a whole-array computation while memory
stays flat for recordings larger than RAM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.spikedata import SpikeData
from spikelab.units import check_sampling_rate, to_ms

DEFAULT_BANDPASS: dict[str, float] = {"lowcut": 300.0, "highcut": 6000.0, "order": 3}
DIRECTIONS = ("both", "up", "down")
_VALUES_PER_CHUNK = 1 << 21  # channels x samples read at once (16 MiB as float64)
NOISE_WINDOWS = 20
NOISE_WINDOW_SECONDS = 0.5

ReadWindow = Callable[[int, int], NDArray[Any]]
"""Returns samples ``[start, stop)`` of every channel as a (channels, samples) array."""


@dataclass(frozen=True)
class Detection:
    """Detected threshold crossings of every channel."""

    spike_samples: list[NDArray[np.int64]]
    """Sample index of each event, one array per channel."""
    thresholds: NDArray[np.float64]
    """The threshold used on each channel, in the traces' units (above the channel mean)."""
    n_samples: int


def bandpass_sos(fs_Hz: float, options: bool | Mapping[str, float] | None) -> NDArray[Any] | None:
    """Design the band-pass filter as second-order sections, or None for no filtering.

    Parameters
    ----------
    fs_Hz : float
        Sampling rate.
    options : bool or mapping or None
        ``True``: Butterworth 300-6000 Hz, order 3. A mapping overrides any of ``lowcut``,
        ``highcut`` (Hz) and ``order``. ``False``/``None``: no filter. ``highcut`` is
        clipped to 95 % of the Nyquist frequency.

    Raises
    ------
    ValueError
        Unknown option names, or a band that is empty after clipping.
    """
    if options is None or options is False:
        return None
    settings = dict(DEFAULT_BANDPASS)
    if isinstance(options, Mapping):
        unknown = sorted(set(options) - set(DEFAULT_BANDPASS))
        if unknown:
            raise ValueError(f"unknown filter options {unknown}: use {sorted(DEFAULT_BANDPASS)}")
        settings.update(options)
    elif options is not True:
        raise ValueError(f"filter must be True, False or a dict of options, got {options!r}")
    nyquist = fs_Hz / 2.0
    low, high = float(settings["lowcut"]), min(float(settings["highcut"]), 0.95 * nyquist)
    if not 0 < low < high:
        raise ValueError(
            f"band-pass {low:g}-{high:g} Hz is empty at fs_Hz={fs_Hz:g} "
            "(highcut is clipped to 95 % of Nyquist); lower lowcut or raise fs_Hz"
        )
    from scipy import signal  # 1 s to import: only when traces are filtered

    return signal.butter(
        int(settings["order"]), [low, high], btype="bandpass", fs=fs_Hz, output="sos"
    )


def settle_samples(sos: NDArray[Any] | None, tolerance: float = 1e-13) -> int:
    """Count the samples until the impulse response stays below ``tolerance`` x its peak."""
    if sos is None:
        return 1
    from scipy.signal import sosfilt

    length = 1 << 12
    while True:
        impulse = np.zeros(length)
        impulse[0] = 1.0
        response = np.abs(sosfilt(sos, impulse))
        above = np.flatnonzero(response > tolerance * response.max())
        if above[-1] < length // 2:
            return int(above[-1]) + 1
        length *= 2


def detect_threshold_crossings(
    read: ReadWindow,
    n_channels: int,
    n_samples: int,
    fs_Hz: float,
    *,
    threshold_sigma: float = 5.0,
    filter: bool | Mapping[str, float] | None = True,
    hysteresis: bool = True,
    direction: str = "both",
    chunk_samples: int | None = None,
) -> Detection:
    """Detect spikes as threshold crossings on each channel.

    The threshold of a channel is ``threshold_sigma`` times the standard deviation of its
    (filtered) trace around its mean. The mean and standard deviation come from
    ``NOISE_WINDOWS`` evenly spaced windows of ``NOISE_WINDOW_SECONDS`` (the whole trace
    when it is shorter than that), so the traces are filtered about once, as SpikeInterface
    does. Neither depends on the chunk size.

    Parameters
    ----------
    read : callable
        ``read(start, stop)`` returns samples ``[start, stop)`` as (channels, samples).
    n_channels, n_samples : int
        Shape of the traces.
    fs_Hz : float
        Sampling rate.
    threshold_sigma : float, default: 5.0
        Threshold in standard deviations.
    filter : bool or mapping, default: True
        See :func:`bandpass_sos`.
    hysteresis : bool, default: True
        One event per crossing (the first sample beyond the threshold). When False, every
        sample beyond the threshold is an event.
    direction : str, default: "both"
        ``'up'`` (above +threshold), ``'down'`` (below -threshold) or ``'both'``.
    chunk_samples : int | None, default: None
        Samples per chunk; by default about 2 M values per chunk across channels.

    Returns
    -------
    Detection
    """
    rate = check_sampling_rate(fs_Hz, what="threshold detection")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not threshold_sigma > 0:
        raise ValueError(f"threshold_sigma must be positive, got {threshold_sigma!r}")
    from scipy.signal import sosfiltfilt

    if n_channels == 0:  # nothing recorded: no channel, no spike
        return Detection([], np.empty(0), n_samples)
    sos = bandpass_sos(rate, filter)
    pad = settle_samples(sos)
    step = chunk_samples or max(4 * pad, _VALUES_PER_CHUNK // max(n_channels, 1))
    if step < 1:
        raise ValueError(f"chunk_samples must be positive, got {chunk_samples!r}")

    def filtered(start: int, stop: int, before: int = 0) -> NDArray[np.float64]:
        """Filtered samples ``[start - before, stop)``, as the whole-trace filter gives them."""
        lo, hi = max(start - pad, 0), min(stop + pad, n_samples)
        if sos is None:  # a copy: the caller's traces are never changed in place
            window = np.array(read(lo, hi), dtype=np.float64)
        else:
            window = sosfiltfilt(sos, np.asarray(read(lo, hi), dtype=np.float64), axis=1)
        return window[:, start - before - lo : stop - lo]

    mean, std = _noise(filtered, n_channels, n_samples, round(NOISE_WINDOW_SECONDS * rate))
    thresholds = threshold_sigma * std

    found: list[list[NDArray[np.int64]]] = [[] for _ in range(n_channels)]
    for start in range(0, n_samples, step):
        # one sample before the chunk, so a crossing at its first sample is seen
        before = 1 if start > 0 else 0
        centred = filtered(start, min(start + step, n_samples), before)
        centred -= mean[:, None]
        if direction == "up":
            beyond = centred > thresholds[:, None]
        elif direction == "down":
            beyond = centred < -thresholds[:, None]
        else:
            beyond = np.abs(centred, out=centred) > thresholds[:, None]
        del centred
        if before:
            previous, beyond = beyond[:, :-1], beyond[:, 1:]
        else:
            previous = np.concatenate([np.zeros((n_channels, 1), bool), beyond[:, :-1]], axis=1)
        events = beyond & ~previous if hysteresis else beyond
        channel_of_event, offset = np.nonzero(events)  # ordered by channel
        per_channel = np.bincount(channel_of_event, minlength=n_channels)
        for channel, samples in enumerate(np.split(offset + start, np.cumsum(per_channel)[:-1])):
            found[channel].append(samples)

    spike_samples = [np.concatenate(parts) if parts else np.empty(0, np.int64) for parts in found]
    return Detection(spike_samples, thresholds, n_samples)


def _noise(
    filtered: Callable[[int, int], NDArray[np.float64]],
    n_channels: int,
    n_samples: int,
    window: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-channel mean and standard deviation over evenly spaced windows of the trace."""
    if n_samples <= NOISE_WINDOWS * window:
        windows = [(start, min(start + window, n_samples)) for start in range(0, n_samples, window)]
    else:
        starts = np.linspace(0, n_samples - window, NOISE_WINDOWS).astype(np.int64).tolist()
        windows = [(start, start + window) for start in starts]
    count = 0
    mean = np.zeros(n_channels)
    sum_squares = np.zeros(n_channels)
    for start, stop in windows:  # Chan et al.'s pairwise update of mean and variance
        core = filtered(start, stop)
        core_count = core.shape[1]
        core_mean = core.mean(axis=1)
        core_squares = ((core - core_mean[:, None]) ** 2).sum(axis=1)
        total = count + core_count
        delta = core_mean - mean
        sum_squares += core_squares + delta**2 * count * core_count / total
        mean += delta * core_count / total
        count = total
    std = np.sqrt(sum_squares / count) if count else np.zeros(n_channels)
    return mean, std


def detection_to_spikedata(
    detection: Detection,
    fs_Hz: float,
    *,
    metadata: Mapping[str, Any],
    unit_ids: Sequence[Any] | None = None,
    locations: Sequence[Sequence[float]] | None = None,
    start_time: float = 0.0,
    length_ms: float | None = None,
) -> SpikeData:
    """One unit per channel (also without spikes), times in ms.

    Sample 0 lies at ``start_time`` (ms), so sample ``k`` is at ``start_time + k / fs``.
    The length is ``length_ms`` when given, else samples / rate.

    Each unit carries ``unit_id`` (the channel's id, default its index), ``electrode`` (the
    channel index), its ``threshold`` and, when given, its ``location``.
    """
    attributes = []
    for channel, threshold in enumerate(detection.thresholds):
        entry: dict[str, Any] = {
            "unit_id": channel if unit_ids is None else unit_ids[channel],
            "electrode": channel,
            "threshold": float(threshold),
        }
        if locations is not None:
            entry["location"] = [float(v) for v in locations[channel]]
        attributes.append(entry)
    if length_ms is None:
        length_ms = to_ms(detection.n_samples, "samples", fs_Hz).item()
    return SpikeData(
        [start_time + to_ms(samples, "samples", fs_Hz) for samples in detection.spike_samples],
        length=length_ms,
        start_time=start_time,
        neuron_attributes=attributes,
        metadata=metadata,
    )
