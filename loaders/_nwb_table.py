"""The parts of an NWB file that become SpikeData, whichever library read them."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spikelab.exceptions import FileFormatError

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


def check_units(source: str, units: UnitsColumns) -> None:
    """Raise FileFormatError when the ragged index does not fit the spike times."""
    ends = units.spike_ends
    if ends.size != units.ids.size:
        raise FileFormatError(
            f"{source}: units table has {units.ids.size} ids but spike_times_index has "
            f"{ends.size} entries"
        )
    if ends.size and (ends.min() < 0 or np.any(np.diff(ends) < 0)):
        raise FileFormatError(f"{source}: spike_times_index is not a non-decreasing end index")
    if ends.size and ends[-1] > units.spike_times_s.size:
        raise FileFormatError(
            f"{source}: spike_times_index points past the end of spike_times "
            f"({int(ends[-1])} > {units.spike_times_s.size} spike times)"
        )


def first_rows(
    source: str, rows: NDArray[Any], ends: NDArray[Any] | None, n_units: int, n_electrodes: int
) -> NDArray[np.int64]:
    """First electrode row of each unit from a (possibly ragged) electrodes column.

    Out-of-range positions warn with both numbers and leave the unit without an electrode.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    first = np.full(n_units, -1, dtype=np.int64)
    if ends is None:
        first[: min(n_units, rows.size)] = rows[:n_units]
    else:
        ends = np.asarray(ends, dtype=np.int64).reshape(-1)
        if ends.size and ends.max() > rows.size:
            warnings.warn(
                f"{source}: electrodes_index points to position {int(ends.max())} but the "
                f"units' electrodes column holds {rows.size} entries; extra positions ignored",
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


def unit_attributes(
    units: UnitsColumns, electrodes: ElectrodesColumns | None
) -> list[dict[str, Any]]:
    """One attribute dict per unit: id, every scalar column, electrode facts, obs intervals."""
    names = list(units.scalars)
    columns = [units.scalars[name].tolist() for name in names]
    rows = units.electrode_rows.tolist() if units.electrode_rows is not None else None
    facts: list[dict[str, Any]] = []  # what each electrodes row gives its units
    if electrodes is not None:
        coordinates = electrodes.xyz.tolist() if electrodes.xyz is not None else None
        for index, channel in enumerate(electrodes.ids.tolist()):
            fact = {
                "electrode": int(channel),
                "location_label": electrodes.location[index],
                "group_name": electrodes.group_name[index],
            }
            if coordinates is not None:
                fact["location"] = coordinates[index]
            facts.append(fact)
    attributes: list[dict[str, Any]] = []
    for index, unit_id in enumerate(units.ids.tolist()):
        entry: dict[str, Any] = {"unit_id": unit_id}
        entry.update({name: column[index] for name, column in zip(names, columns, strict=True)})
        if rows is not None and facts and rows[index] >= 0:
            fact = facts[rows[index]]
            entry.update(fact)
            if "location" in fact:
                entry["location"] = list(fact["location"])
        if units.obs_intervals_s is not None:
            entry["obs_intervals_ms"] = (units.obs_intervals_s[index] * 1000.0).tolist()
        attributes.append(entry)
    return attributes
