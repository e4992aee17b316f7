"""Raw traces in HDF5: detect spikes by threshold crossing, one unit per channel."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from spikelab.detect import detect_threshold_crossings, detection_to_spikedata
from spikelab.exceptions import FileFormatError
from spikelab.loaders._common import (
    check_declared_size,
    check_numeric,
    errors_naming,
    file_attribute,
    first_given,
    open_hdf5,
    read_slab,
    require_dataset,
)
from spikelab.spikedata import SpikeData
from spikelab.units import check_sampling_rate


def load_spikedata_from_hdf5_raw_thresholded(
    filepath: str | Path,
    dataset: str,
    *,
    fs_Hz: float,
    threshold_sigma: float = 5.0,
    filter: bool | Mapping[str, float] = True,
    hysteresis: bool = True,
    direction: str = "both",
    chunk_samples: int | None = None,
    length_ms: float | None = None,
    start_time_ms: float | None = None,
) -> SpikeData:
    """Detect spikes in raw traces stored in an HDF5 dataset shaped (channels, samples).

    The traces are band-passed (zero-phase Butterworth, 300-6000 Hz by default) and each
    channel is thresholded at ``threshold_sigma`` standard deviations. The dataset is read
    in chunks, so files larger than memory work; the result does not depend on the chunk
    size.

    Parameters
    ----------
    filepath : str or Path
        The HDF5 file.
    dataset : str
        Path of the traces dataset inside the file (channels x samples).
    fs_Hz : float
        Sampling rate in Hz; must be positive and finite.
    threshold_sigma : float, default: 5.0
        Threshold in per-channel standard deviations.
    filter : bool or dict, default: True
        ``True`` for the default band-pass, a dict to override ``lowcut``, ``highcut`` or
        ``order``, ``False`` for none.
    hysteresis : bool, default: True
        One event per crossing when True; every sample beyond the threshold when False.
    direction : str, default: "both"
        ``'both'``, ``'up'`` or ``'down'``.
    chunk_samples : int | None, default: None
        Samples read per chunk (default: about 8 M values across channels).
    length_ms : float | None, default: None
        Recording length; else the file's root attribute ``length_ms``, else samples /
        ``fs_Hz``.
    start_time_ms : float | None, default: None
        Time of the first sample; else the file's root attribute ``start_time``, else 0.

    Returns
    -------
    SpikeData
        One unit per channel (``unit_id`` and ``electrode`` = channel index, ``threshold``).
        Sample ``k`` lies at ``start_time + k / fs_Hz``: a start of -100 ms gives an
        event-centred window, a length beyond the samples a trailing silence.

    Raises
    ------
    ValueError
        A bad ``fs_Hz``, filter or direction, a dataset that is not 2-D or holds text, or
        root attributes that are not numbers.
    KeyError
        The dataset is not in the file.
    """
    rate = check_sampling_rate(fs_Hz, what="threshold detection")
    path = Path(filepath)
    with open_hdf5(path) as handle:
        traces = require_dataset(handle, dataset)
        if traces.ndim != 2:
            raise FileFormatError(
                f"{path}: dataset {dataset!r} must be 2-D (channels, samples), "
                f"got shape {traces.shape}"
            )
        check_numeric(path, traces, "raw samples")
        check_declared_size(path, traces)
        start_time = first_given(start_time_ms, file_attribute(handle, "start_time"), 0.0)
        length = first_given(length_ms, file_attribute(handle, "length_ms"))
        n_channels, n_samples = traces.shape
        detection = detect_threshold_crossings(
            lambda start, stop: read_slab(path, traces, np.s_[:, start:stop]),
            n_channels,
            n_samples,
            rate,
            threshold_sigma=threshold_sigma,
            filter=filter,
            hysteresis=hysteresis,
            direction=direction,
            chunk_samples=chunk_samples,
        )
    with errors_naming(path):
        return detection_to_spikedata(
            detection,
            rate,
            start_time=start_time,
            length_ms=length,
            metadata={
                "source_file": str(path),
                "format": "hdf5_raw_thresholded",
                "fs_Hz": rate,
                "threshold_sigma": threshold_sigma,
                "filter": filter if isinstance(filter, bool) else dict(filter),
                "direction": direction,
            },
        )
