"""SpikeInterface sortings and recordings (duck-typed; spikeinterface itself is optional)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.detect import detect_threshold_crossings, detection_to_spikedata
from spikelab.loaders._common import python_value
from spikelab.spikedata import SpikeData, group_by_unit
from spikelab.units import check_sampling_rate, to_ms

_SORTING_METHODS = ("get_unit_ids", "get_sampling_frequency", "get_unit_spike_train")
# Properties asked of duck-typed sortings, which cannot list their own.
_COMMON_PROPERTIES = (
    "channel",
    "location",
    "location_label",
    "quality",
    "group",
    "KSLabel",
    "firing_rate",
    "snr",
)


def _is_spikeinterface(obj: Any, class_name: str) -> bool:
    """Tell whether ``obj`` is a real SpikeInterface object, without importing the library.

    A real instance implies spikeinterface is already imported; mocks that answer every
    attribute are not instances.
    """
    core = sys.modules.get("spikeinterface.core")
    return core is not None and isinstance(obj, getattr(core, class_name))


def load_spikedata_from_spikeinterface(
    sorting: Any,
    *,
    sampling_frequency: float | None = None,
    unit_ids: Sequence[Any] | None = None,
    segment_index: int = 0,
) -> SpikeData:
    """Convert a SpikeInterface sorting (or any object shaped like one) to SpikeData.

    Only ``get_unit_ids()``, ``get_sampling_frequency()``, ``get_unit_spike_train(unit_id,
    segment_index=...)`` and, optionally, ``get_property(name)`` are used, so spikeinterface
    need not be installed. Real ``BaseSorting`` objects are read through their spike vector
    in one pass instead of one call per unit.

    Parameters
    ----------
    sorting : object
        The sorting.
    sampling_frequency : float | None, default: None
        Overrides the sorting's rate when given (and non-zero).
    unit_ids : sequence | None, default: None
        Units to keep, in this order; by default every unit in the sorting's order. An
        empty sequence gives an empty SpikeData (N = 0).
    segment_index : int, default: 0
        Segment to read.

    Returns
    -------
    SpikeData
        ``neuron_attributes[i]['unit_id']`` is the sorting's own id; sorting properties are
        attributes too: ``channel`` (or Phy's ``ch``) becomes ``electrode``; ``location`` is
        always a list of coordinates (a scalar ``x`` becomes ``[x]``), and a text
        ``location`` becomes ``location_label``. A property array shorter than the unit list
        gives values to the first units only.

    Raises
    ------
    TypeError
        The object lacks the sorting methods.
    ValueError
        A non-positive rate, or ids the sorting does not have.
    """
    missing = [name for name in _SORTING_METHODS if not callable(getattr(sorting, name, None))]
    if missing:
        raise TypeError(f"{type(sorting).__name__} is not a sorting: it lacks {', '.join(missing)}")
    if sampling_frequency:
        rate = check_sampling_rate(sampling_frequency, name="sampling_frequency")
    else:
        rate = check_sampling_rate(
            sorting.get_sampling_frequency(),
            what="converting spike samples to ms",
            name="the sorting's sampling frequency",
        )
    all_ids = list(sorting.get_unit_ids())
    position = {unit_id: index for index, unit_id in enumerate(all_ids)}
    chosen = all_ids if unit_ids is None else list(unit_ids)
    unknown = [unit_id for unit_id in chosen if unit_id not in position]
    if unknown:
        raise ValueError(f"unit ids {unknown} are not in the sorting (it has {all_ids})")

    if _is_spikeinterface(sorting, "BaseSorting"):
        spikes = sorting.to_spike_vector(concatenated=False)[segment_index]
        grouped, ends = group_by_unit(
            spikes["unit_index"], to_ms(spikes["sample_index"], "samples", rate), len(all_ids)
        )
        trains = np.split(grouped, ends[:-1])
        trains = [trains[position[unit_id]] for unit_id in chosen]
    else:
        trains = [
            to_ms(
                np.asarray(sorting.get_unit_spike_train(unit_id, segment_index=segment_index)),
                "samples",
                rate,
            )
            for unit_id in chosen
        ]
    properties = _sorting_properties(sorting)
    attributes = [_unit_attributes(unit_id, position[unit_id], properties) for unit_id in chosen]
    return SpikeData(
        trains,
        length=_recorded_length_ms(sorting, segment_index, rate),
        neuron_attributes=attributes,
        metadata={
            "format": "spikeinterface",
            "source_class": type(sorting).__name__,
            "fs_Hz": rate,
            "segment_index": segment_index,
        },
    )


def _sorting_properties(sorting: Any) -> dict[str, Any]:
    """Per-unit property arrays, renamed to spikelab's attribute keys.

    ``channel`` (else Phy's ``ch``) becomes ``electrode`` when it holds channel numbers; a
    ``location`` that holds text (a region name) becomes ``location_label``
    (``location_text`` if the sorting also has a ``location_label``), so that ``location``
    only ever holds coordinates.
    """
    if not callable(getattr(sorting, "get_property", None)):
        return {}
    if _is_spikeinterface(sorting, "BaseSorting"):
        names: Sequence[str] = sorting.get_property_keys()
    else:
        names = _COMMON_PROPERTIES
    found: dict[str, Any] = {}
    for name in names:
        try:
            values = sorting.get_property(name)
        except KeyError:
            continue
        if isinstance(values, np.ndarray | list | tuple) and len(values):
            found[name] = values
    renamed: dict[str, Any] = {}
    channel = "channel" if "channel" in found else "ch"  # read_phy names Phy's column "ch"
    for name, values in found.items():
        if name == channel and not _holds_text(values):
            renamed["electrode"] = values
        elif name == "location" and _holds_text(values):
            renamed["location_text" if "location_label" in found else "location_label"] = values
        else:
            renamed[name] = values
    return renamed


def _holds_text(values: Any) -> bool:
    """Whether a property array holds any text (strings or bytes)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "SU":
        return True
    return any(isinstance(item, str | bytes) for item in np.ravel(np.asarray(values, dtype=object)))


def _unit_attributes(unit_id: Any, index: int, properties: dict[str, Any]) -> dict[str, Any]:
    """A unit's attributes; a property array shorter than the unit list skips later units."""
    entry: dict[str, Any] = {"unit_id": _listed(unit_id)}
    for name, values in properties.items():
        if index >= len(values):
            continue
        value = _listed(values[index])
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif name == "location" and isinstance(value, int | float):
            value = [float(value)]  # one coordinate per unit is still a list
        entry[name] = value
    return entry


def _recorded_length_ms(sorting: Any, segment_index: int, rate: float) -> float | None:
    if _is_spikeinterface(sorting, "BaseSorting") and sorting.has_recording():
        return to_ms(sorting.get_num_samples(segment_index), "samples", rate).item()
    return None


def _listed(value: Any) -> Any:
    return python_value(value, arrays_as_lists=True)


def load_spikedata_from_spikeinterface_recording(
    recording: Any,
    *,
    segment_index: int = 0,
    threshold_sigma: float = 5.0,
    filter: bool | Mapping[str, float] = False,
    hysteresis: bool = True,
    direction: str = "both",
    chunk_samples: int | None = None,
) -> SpikeData:
    """Detect threshold crossings in a SpikeInterface recording, one unit per channel.

    Real ``BaseRecording`` objects are read in chunks of time (never whole), through the
    same detector as :func:`load_spikedata_from_hdf5_raw_thresholded`, which gives the same
    result on the same samples. Other objects with ``get_traces(segment_index=...)`` are
    read once; their traces may be (channels, time) or (time, channels): they are
    transposed when rows outnumber columns (square data is taken as channels x time).

    Parameters
    ----------
    recording : object
        The recording.
    segment_index : int, default: 0
        Segment to read.
    threshold_sigma : float, default: 5.0
        Threshold in per-channel standard deviations.
    filter : bool or dict, default: False
        Band-pass before detection (see :func:`spikelab.detect.bandpass_sos`).
    hysteresis : bool, default: True
        One event per crossing; False reports every sample beyond the threshold.
    direction : str, default: "both"
        ``'both'``, ``'up'`` or ``'down'``.
    chunk_samples : int | None, default: None
        Samples per chunk for real recordings.

    Returns
    -------
    SpikeData
        One unit per channel, also for channels without spikes.

    Raises
    ------
    TypeError
        The recording has no sampling frequency.
    ValueError
        Traces that are not 2-D, or bad detection settings.
    """
    if callable(getattr(recording, "get_sampling_frequency", None)):
        rate_value = recording.get_sampling_frequency()
    else:
        rate_value = getattr(recording, "sampling_frequency", None)
    if rate_value is None:
        raise TypeError(
            f"{type(recording).__name__} has no sampling frequency: give it "
            "get_sampling_frequency() or a sampling_frequency attribute"
        )
    rate = check_sampling_rate(rate_value, name="the recording's sampling frequency")

    channel_ids: list[Any]
    if _is_spikeinterface(recording, "BaseRecording"):
        n_channels = recording.get_num_channels()
        n_samples = recording.get_num_samples(segment_index)

        def read(start: int, stop: int) -> NDArray[Any]:
            return recording.get_traces(
                segment_index=segment_index, start_frame=start, end_frame=stop
            ).T

        channel_ids = [_listed(c) for c in recording.get_channel_ids()]
        locations = recording.get_channel_locations() if recording.has_probe() else None
    else:
        traces = np.asarray(recording.get_traces(segment_index=segment_index))
        if traces.ndim != 2:
            raise ValueError(
                f"recording traces must be 2-D (channels x time), got shape {traces.shape}"
            )
        if traces.shape[0] > traces.shape[1]:
            traces = traces.T
        n_channels, n_samples = traces.shape

        def read(start: int, stop: int) -> NDArray[Any]:
            return traces[:, start:stop]

        channel_ids = list(range(n_channels))
        locations = None

    detection = detect_threshold_crossings(
        read,
        n_channels,
        n_samples,
        rate,
        threshold_sigma=threshold_sigma,
        filter=filter,
        hysteresis=hysteresis,
        direction=direction,
        chunk_samples=chunk_samples,
    )
    return detection_to_spikedata(
        detection,
        rate,
        unit_ids=channel_ids,
        locations=locations,
        metadata={
            "format": "spikeinterface_recording",
            "source_class": type(recording).__name__,
            "fs_Hz": rate,
            "segment_index": segment_index,
            "threshold_sigma": threshold_sigma,
            "direction": direction,
        },
    )
