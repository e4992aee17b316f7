"""Write SpikeData to an NWB file that :func:`load_spikedata_from_nwb` reads back exactly."""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab._optional import import_optional
from spikelab.spikedata import SpikeData

# Attributes the Units table stores elsewhere (ids, electrodes rows, obs_intervals).
_STRUCTURAL = {
    "unit_id",
    "electrode",
    "location",
    "location_label",
    "group_name",
    "obs_intervals_ms",
}
_SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "date_of_birth")
_DEFAULT_DESCRIPTION = "Spike trains exported by spikelab"


def export_spikedata_to_nwb(
    sd: SpikeData,
    filepath: str | os.PathLike[str],
    *,
    session_description: str | None = None,
    identifier: str | None = None,
    session_start_time: datetime | None = None,
) -> Path:
    """Write ``sd`` as an NWB file with a Units table (spike times in seconds).

    Units whose attributes carry ``electrode`` get electrodes rows (with ``location`` as
    x/y/z, ``location_label`` as the location text and ``group_name`` as the electrode
    group), so the loader restores them. Every other attribute whose value is a bool, int,
    float or str for every unit becomes a Units column. Integer ``unit_id`` values become
    the table ids; other ids go to a ``unit_name`` column. The recording's ``length_ms``,
    ``start_time`` (and ``sampling_rate_hz`` when known) are stored as file attributes;
    a known rate (``sampling_rate_hz`` or ``fs_Hz`` in the metadata) also sets the Units
    table's ``resolution``.
    The file is written under a temporary name and renamed into place.

    Parameters
    ----------
    sd : SpikeData
        What to write.
    filepath : str or PathLike
        Destination ``.nwb`` path.
    session_description, identifier : str | None, default: None
        Default to ``sd.metadata``'s values, else a generic description and a new UUID.
    session_start_time : datetime | None, default: None
        Defaults to ``sd.metadata['session_start_time']`` (ISO), else the Unix epoch (UTC).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ImportError
        pynwb is not installed.
    """
    pynwb = import_optional("pynwb", "nwb")
    metadata = sd.metadata
    nwbfile = pynwb.NWBFile(
        session_description=session_description
        or metadata.get("session_description")
        or _DEFAULT_DESCRIPTION,
        identifier=identifier or metadata.get("identifier") or str(uuid.uuid4()),
        session_start_time=session_start_time
        or _parse_datetime(metadata.get("session_start_time"))
        or datetime(1970, 1, 1, tzinfo=UTC),
    )
    subject = {name: metadata.get(name) for name in _SUBJECT_FIELDS if metadata.get(name)}
    if subject:
        if "date_of_birth" in subject:
            subject["date_of_birth"] = _parse_datetime(subject["date_of_birth"])
        nwbfile.subject = pynwb.file.Subject(**subject)
    for name in metadata.get("device_names") or []:
        nwbfile.create_device(name=name, description="recording device")
    rate = metadata.get("sampling_rate_hz") or metadata.get("fs_Hz")
    nwbfile.units = pynwb.misc.Units(
        name="units",
        description="units exported by spikelab",
        resolution=1.0 / float(rate) if rate else None,
    )

    rows = _add_electrodes(nwbfile, sd)
    _add_units(nwbfile, sd, rows)

    destination = Path(filepath)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{destination.stem}.", suffix=".part.nwb", dir=destination.parent
    )
    os.close(descriptor)
    try:
        with pynwb.NWBHDF5IO(temp_name, mode="w") as io:
            io.write(nwbfile)
        with h5py.File(temp_name, "r+") as handle:
            handle.attrs["length_ms"] = sd.length
            handle.attrs["start_time"] = sd.start_time
            if rate:
                handle.attrs["sampling_rate_hz"] = float(rate)
        os.replace(temp_name, destination)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return destination


def _parse_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _coordinates(location: Any) -> list[float]:
    values = [float(v) for v in (location or [])][:3]
    return values + [math.nan] * (3 - len(values))


def _add_electrodes(nwbfile: Any, sd: SpikeData) -> dict[int, int]:
    """Add one electrodes row per known channel; return channel id -> row index."""
    described: dict[int, dict[str, Any]] = {
        int(channel): dict(row)
        for channel, row in (sd.metadata.get("electrodes_by_channel") or {}).items()
    }
    for attributes in sd.neuron_attributes or []:
        if attributes.get("electrode") is None:
            continue
        x, y, z = _coordinates(attributes.get("location"))
        described.setdefault(
            int(attributes["electrode"]),
            {
                "location": attributes.get("location_label"),
                "group_name": attributes.get("group_name"),
                "x": x,
                "y": y,
                "z": z,
            },
        )
    if not described:
        return {}
    device = (
        next(iter(nwbfile.devices.values()))
        if nwbfile.devices
        else nwbfile.create_device(name="probe", description="recording device")
    )
    groups: dict[str, Any] = {}
    rows = {}
    for row, channel in enumerate(sorted(described)):
        entry = described[channel]
        group_name = entry.get("group_name") or "electrode_group"
        location = entry.get("location") or "unknown"
        if group_name not in groups:
            groups[group_name] = nwbfile.create_electrode_group(
                name=group_name, description="electrode group", location=location, device=device
            )
        nwbfile.add_electrode(
            id=channel,
            x=_nan_if_none(entry.get("x")),
            y=_nan_if_none(entry.get("y")),
            z=_nan_if_none(entry.get("z")),
            location=location,
            group=groups[group_name],
        )
        rows[channel] = row
    return rows


def _nan_if_none(value: Any) -> float:
    return math.nan if value is None else float(value)


def _scalar_columns(sd: SpikeData) -> list[str]:
    attributes = sd.neuron_attributes or []
    if not attributes:
        return []
    names = set(attributes[0]) - _STRUCTURAL
    columns = []
    for name in sorted(names):
        values = [entry.get(name) for entry in attributes]
        kinds = {type(value) for value in values}
        if len(kinds) == 1 and kinds <= {bool, int, float, str}:
            columns.append(name)
    return columns


def _add_units(nwbfile: Any, sd: SpikeData, electrode_rows: dict[int, int]) -> None:
    attributes = sd.neuron_attributes or [{} for _ in range(sd.N)]
    unit_ids: list[Any] = [entry.get("unit_id") for entry in attributes]
    integer_ids = all(
        isinstance(value, int | np.integer) and not isinstance(value, bool) for value in unit_ids
    ) and len(set(unit_ids)) == len(unit_ids)
    columns = _scalar_columns(sd)
    if not integer_ids and any(value is not None for value in unit_ids):
        columns.append("unit_name")
    for name in columns:
        nwbfile.add_unit_column(name=name, description=f"{name} of each unit (from spikelab)")
    with_intervals = bool(attributes) and all("obs_intervals_ms" in entry for entry in attributes)
    for index, (train, entry) in enumerate(zip(sd.train, attributes, strict=True)):
        row: dict[str, Any] = {
            "spike_times": train / 1000.0,
            "id": int(unit_ids[index]) if integer_ids else index,
        }
        for name in columns:
            row[name] = str(unit_ids[index]) if name == "unit_name" else entry[name]
        if electrode_rows:
            channel = entry.get("electrode")
            row["electrodes"] = [] if channel is None else [electrode_rows[int(channel)]]
        if with_intervals:
            row["obs_intervals"] = np.asarray(entry["obs_intervals_ms"]) / 1000.0
        nwbfile.add_unit(**row)
