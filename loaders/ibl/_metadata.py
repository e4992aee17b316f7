"""Turn IBL records (trials, session, subject, insertion, channels) into metadata fields.

Times become milliseconds, dates ISO strings; missing values become absent or None.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any, TypeVar

import numpy as np

from spikelab.loaders.ibl._bwm_units import region_acronyms
from spikelab.units import to_ms

_logger = logging.getLogger(__name__)
T = TypeVar("T")


class BestEffort:
    """Call a lookup; on one of ``errors`` log it at debug level and return None."""

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        self.errors = errors

    def __call__(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return call(*args, **kwargs)
        except self.errors as error:
            _logger.debug("IBL %s lookup failed: %s: %s", what, type(error).__name__, error)
            return None


TRIAL_TIMES = {  # ours: ALF attribute (seconds, converted to ms)
    "stim_on_times": "stimOn_times",
    "stim_off_times": "stimOff_times",
    "go_cue_times": "goCue_times",
    "response_times": "response_times",
    "feedback_times": "feedback_times",
    "first_movement_times": "firstMovement_times",
}
TRIAL_VALUES = {  # ours: ALF attribute (kept as they are)
    "choice": "choice",
    "feedback_type": "feedbackType",
    "contrast_left": "contrastLeft",
    "contrast_right": "contrastRight",
    "probability_left": "probabilityLeft",
}
INSERTION_COORDINATES = ("x", "y", "z", "theta", "phi", "depth")


def trial_fields(trials: Mapping[str, Any]) -> dict[str, Any]:
    """Convert an ALF trials object to metadata: times in ms, choices and contrasts as given."""
    fields: dict[str, Any] = {}
    intervals = np.asarray(trials.get("intervals", np.empty((0, 0))), dtype=np.float64)
    if intervals.ndim == 2 and intervals.shape[1] == 2 and intervals.shape[0]:
        fields["trial_start_times"] = to_ms(intervals[:, 0], "s")
        fields["trial_end_times"] = to_ms(intervals[:, 1], "s")
    for ours, theirs in TRIAL_TIMES.items():
        if theirs in trials:
            fields[ours] = to_ms(np.asarray(trials[theirs]).reshape(-1), "s")
    for ours, theirs in TRIAL_VALUES.items():
        if theirs in trials:
            fields[ours] = np.array(trials[theirs]).reshape(-1)
    if fields:
        fields["n_trials"] = max(len(values) for values in fields.values())
    return fields


def session_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Session metadata from an Alyx session record or ONE's sessions cache row."""
    projects = record.get("projects")
    if isinstance(projects, list | tuple):
        projects = ",".join(map(str, projects))
    return {
        "subject_id": text_or_none(record.get("subject")),
        "session_start_time": _iso(record.get("start_time") or record.get("date")),
        "session_end_time": _iso(record.get("end_time")),
        "lab": text_or_none(record.get("lab")),
        "task_protocol": text_or_none(record.get("task_protocol")),
        "project": text_or_none(projects),
        "session_number": integer_or_none(record.get("number")),
        "procedures": list(record["procedures"]) if record.get("procedures") else None,
        "qc": text_or_none(record.get("qc")),
    }


def subject_fields(record: Mapping[str, Any], session_start: str | None) -> dict[str, Any]:
    """Subject metadata from an Alyx subject record; age in weeks at the session."""
    birth = _iso(record.get("birth_date"))
    genotype = record.get("genotype")
    fields: dict[str, Any] = {
        "species": text_or_none(record.get("species")),
        "sex": text_or_none(record.get("sex")),
        "date_of_birth": birth,
        "strain": text_or_none(record.get("strain")),
        "genotype": text_or_none(
            ", ".join(map(str, genotype)) if isinstance(genotype, list) else genotype
        ),
        "responsible_user": text_or_none(record.get("responsible_user")),
    }
    if birth and session_start:
        age = date.fromisoformat(session_start[:10]) - date.fromisoformat(birth[:10])
        fields["age_weeks"] = age.days / 7.0
    return fields


def insertion_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """Probe name, model and the ``insertion_*`` coordinates found in the insertion's JSON."""
    details = record.get("json")
    if isinstance(details, str):
        details = json.loads(details)
    details = details if isinstance(details, Mapping) else {}
    fields: dict[str, Any] = {
        "probe_name": text_or_none(record.get("name")),
        "probe_model": text_or_none(record.get("model")),
    }
    for name in INSERTION_COORDINATES:
        fields[f"insertion_{name}"] = number_or_none(details.get(name))
    return fields


def electrodes_by_channel(
    channels: Mapping[str, Any], probe: str | None
) -> dict[int, dict[str, Any]]:
    """Describe each channel as the NWB loader does, plus atlas id, probe coordinates, raw index.

    ``mlapdv`` (µm) becomes x/y/z in mm; ``location`` is the Allen acronym of
    ``brainLocationIds_ccf_2017`` (None without iblatlas); ``local_x``/``local_y`` stay in µm.
    """
    atlas = channels.get("brainLocationIds_ccf_2017")
    mlapdv = channels.get("mlapdv")
    columns = {
        "atlas_id": atlas,
        "xyz": None if mlapdv is None else np.asarray(mlapdv, dtype=np.float64) / 1000.0,
        "local": channels.get("localCoordinates"),
        "raw_index": channels.get("rawInd"),
    }
    count = max((len(values) for values in columns.values() if values is not None), default=0)
    acronyms = None
    if atlas is not None:
        acronyms = BestEffort((ImportError,))("channel regions", region_acronyms, atlas, "Allen")
    return {channel: _channel(channel, columns, acronyms, probe) for channel in range(count)}


def _channel(
    channel: int, columns: Mapping[str, Any], acronyms: Any, probe: str | None
) -> dict[str, Any]:
    """One channel's fields; a column shorter than the others leaves its fields None."""
    xyz, local = _row(columns["xyz"], channel), _row(columns["local"], channel)
    atlas, raw = _row(columns["atlas_id"], channel), _row(columns["raw_index"], channel)
    return {
        "location": _row(acronyms, channel),
        "group_name": probe,
        "x": None if xyz is None else number_or_none(xyz[0]),
        "y": None if xyz is None else number_or_none(xyz[1]),
        "z": None if xyz is None else number_or_none(xyz[2]),
        "atlas_id": integer_or_none(atlas),
        "local_x": None if local is None else number_or_none(local[0]),
        "local_y": None if local is None else number_or_none(local[1]),
        "raw_index": integer_or_none(raw),
    }


def _row(values: Any, index: int) -> Any:
    """``values[index]``, or None when there are no values or too few."""
    return None if values is None or index >= len(values) else values[index]


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def text_or_none(value: Any) -> str | None:
    return None if _missing(value) else (str(value) or None)


def number_or_none(value: Any) -> float | None:
    return None if _missing(value) or math.isnan(float(value)) else float(value)


def integer_or_none(value: Any) -> int | None:
    number = number_or_none(value)
    return None if number is None else int(number)


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return text_or_none(value)
