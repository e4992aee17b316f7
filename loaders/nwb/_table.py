"""The parts of an NWB file that become SpikeData, whichever library read them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

# Session and subject fields of an NWB file.
SESSION_KEYS = (
    "identifier",
    "session_description",
    "session_start_time",
    "subject_id",
    "species",
    "sex",
    "age",
    "date_of_birth",
)
# Attribute keys whose meaning spikelab fixes (compat.md, "Unit attributes"), and the
# reference column whose group name may fill ``group_name``: a Units column with one of
# these names is placed by :func:`_place`, never copied over them.
STRUCTURAL_KEYS = frozenset(
    ("unit_id", "electrode", "location", "location_label", "group_name", "obs_intervals_ms")
    + ("electrode_group",)
)
# Metadata keys every NWB load fills (None when the file does not say).
METADATA_KEYS = (*SESSION_KEYS, "device_names", "sampling_rate_hz", "duration_seconds")


@dataclass
class UnitsColumns:
    """A Units table as whole arrays: one bulk read per column, never one per unit."""

    ids: NDArray[Any]
    spike_times_s: NDArray[np.float64]
    spike_ends: NDArray[np.int64]
    scalars: dict[str, NDArray[Any]] = field(default_factory=dict)
    electrode_rows: NDArray[np.int64] | None = None
    """Row of each unit's first electrode in the electrodes table; -1 when it has none."""
    obs_intervals_s: list[NDArray[np.float64]] | None = None


@dataclass
class NoSpikeTimes:
    """A Units table without spike times (it holds only electrodes, waveforms ...)."""

    columns: list[str]


@dataclass
class ElectrodesColumns:
    """The electrodes table columns spikelab uses."""

    ids: NDArray[np.int64]
    location: list[str | None]
    group_name: list[str | None]
    xyz: NDArray[np.float64] | None  # rows x 3, NaN where unknown

    def by_channel(self) -> dict[int, dict[str, Any]]:
        """Describe each electrode, keyed by its id (the channel number)."""
        return {int(channel): self.row(index) for index, channel in enumerate(self.ids.tolist())}

    def row(self, index: int) -> dict[str, Any]:
        """Location label, group and coordinates of one electrode row."""
        x, y, z = (
            (None, None, None) if self.xyz is None else (_float_or_none(v) for v in self.xyz[index])
        )
        return {
            "location": self.location[index],
            "group_name": self.group_name[index],
            "x": x,
            "y": y,
            "z": z,
        }


def _float_or_none(value: Any) -> float | None:
    number = float(value)
    return None if math.isnan(number) else number


def series_timing(
    n_samples: int, rate: Any, stamps: tuple[Any, Any, Any] | None
) -> tuple[float | None, float | None]:
    """Sampling rate (Hz) and duration (s) of an ElectricalSeries.

    From its ``rate``, else from its first two and last timestamps; ``(None, None)`` when
    neither gives a positive, finite rate (a rate of 0 says nothing about the duration).
    """
    if rate is not None:
        value = float(rate)
        return (value, n_samples / value) if _positive(value) else (None, None)
    if stamps is None:
        return None, None
    first, second, last = (float(v) for v in stamps)
    step = second - first
    if not _positive(step) or not math.isfinite(last):
        return None, None
    return 1.0 / step, last - first + step


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def spike_times_column(names: Iterable[str]) -> str | None:
    """Which ragged column holds the spike times, given the names of a Units table's columns.

    ``names`` are the columns stored with their ``<name>_index``. The one named exactly
    ``spike_times`` wins; otherwise the first (sorted) whose name ends in ``spike_times``;
    None when there is none.
    """
    candidates = sorted(name for name in names if name.endswith("spike_times"))
    if "spike_times" in candidates:
        return "spike_times"
    return candidates[0] if candidates else None


def first_rows(
    source: str,
    rows: NDArray[np.int64],
    ends: NDArray[np.int64] | None,
    n_units: int,
    n_electrodes: int,
) -> NDArray[np.int64]:
    """First electrode row of each unit from a (possibly ragged) electrodes column.

    Out-of-range positions warn with both numbers and leave the unit without an electrode.
    """
    first = np.full(n_units, -1, dtype=np.int64)
    if ends is None:
        first[: min(n_units, rows.size)] = rows[:n_units]
    else:
        if ends.size and ends.max() > rows.size:
            warnings.warn(
                f"{source}: electrodes_index points to position {int(ends.max())} but the "
                f"units' electrodes column holds {rows.size} entries; the index is truncated "
                f"to those {rows.size} entries",
                UserWarning,
                stacklevel=4,
            )
        starts = np.concatenate([[0], ends[:-1]]) if ends.size else ends
        has_rows = (ends > starts) & (starts < rows.size)
        first[: ends.size][has_rows] = rows[starts[has_rows]]
    past = first >= n_electrodes
    if np.any(past):
        warnings.warn(
            f"{source}: units reference electrode row {int(first[past].max())} but the "
            f"electrodes table has {n_electrodes} rows; those units get no electrode",
            UserWarning,
            stacklevel=4,
        )
        first[past] = -1
    return first


def _electrode_facts(electrodes: ElectrodesColumns | None) -> list[dict[str, Any]]:
    """What each electrodes row gives the units recorded on it."""
    if electrodes is None:
        return []
    coordinates = electrodes.xyz.tolist() if electrodes.xyz is not None else None
    facts = []
    for index, channel in enumerate(electrodes.ids.tolist()):
        fact: dict[str, Any] = {
            "electrode": int(channel),
            "location_label": electrodes.location[index],
            "group_name": electrodes.group_name[index],
        }
        if coordinates is not None:
            fact["location"] = coordinates[index]
        facts.append(fact)
    return facts


def _slot(name: str, value: Any) -> str | None:
    """The structural key a same-named Units column may fill, given its value's kind."""
    text = isinstance(value, str)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name == "location":  # a region name is a label; a number is a coordinate
        return "location_label" if text else ("location" if number else None)
    if name == "electrode_group":  # a reference, already resolved to the group's name
        return "group_name" if text else None
    if name in ("location_label", "group_name"):
        return name if text else None
    return None  # unit_id, electrode, obs_intervals_ms: only the table's structure sets them


def _place(entry: dict[str, Any], name: str, value: Any) -> None:
    """Put a Units column named like a structural key where it belongs, never over one.

    It fills the key it means when nothing else did (a text ``location`` becomes
    ``location_label``, a number becomes ``location: [x]``, an ``electrode_group`` reference
    names ``group_name``); otherwise it is kept as ``units_<name>``, except
    ``electrode_group``, which the electrodes table's group already says.
    """
    slot = _slot(name, value)
    if slot is not None and entry.get(slot) is None:
        entry[slot] = [float(value)] if slot == "location" else value
    elif name != "electrode_group":
        entry[f"units_{name}"] = value


def unit_attributes(
    units: UnitsColumns, electrodes: ElectrodesColumns | None
) -> list[dict[str, Any]]:
    """One attribute dict per unit: id, every scalar column, electrode facts, obs intervals.

    The keys spikelab gives a meaning to (:data:`STRUCTURAL_KEYS`) come from the table's
    structure (ids, electrodes rows, obs_intervals); a Units column with one of those names
    never overwrites them (see :func:`_place`).
    """
    plain = [name for name in units.scalars if name not in STRUCTURAL_KEYS]
    placed = [name for name in units.scalars if name in STRUCTURAL_KEYS]
    columns = {name: units.scalars[name].tolist() for name in units.scalars}
    rows = units.electrode_rows.tolist() if units.electrode_rows is not None else None
    facts = _electrode_facts(electrodes)
    attributes: list[dict[str, Any]] = []
    for index, unit_id in enumerate(units.ids.tolist()):
        entry: dict[str, Any] = {"unit_id": unit_id}
        entry.update({name: columns[name][index] for name in plain})
        if rows is not None and facts and rows[index] >= 0:
            fact = facts[rows[index]]
            entry.update(fact)
            if "location" in fact:
                entry["location"] = list(fact["location"])
        if units.obs_intervals_s is not None:
            entry["obs_intervals_ms"] = (units.obs_intervals_s[index] * 1000.0).tolist()
        for name in placed:
            _place(entry, name, columns[name][index])
        attributes.append(entry)
    return attributes
