"""Write SpikeData to an NWB file that :func:`load_spikedata_from_nwb` reads back exactly."""

from __future__ import annotations

import math
import os
import re
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab._optional import import_optional
from spikelab.exceptions import DandiReadinessWarning
from spikelab.spikedata import SpikeData

# Attributes the Units table stores elsewhere (ids, electrodes rows, obs_intervals).
_STRUCTURAL = {
    "unit_id",
    "electrode",
    "location",
    "location_label",
    "group_name",
    "obs_intervals_ms",
    "electrode_group",  # the group of the unit's electrodes row says it
}
_SUBJECT_FIELDS = ("subject_id", "species", "sex", "age", "date_of_birth")
_DEFAULT_DESCRIPTION = "Spike trains exported by spikelab"
# Forms nwbinspector's DANDI checks accept (nwbinspector/checks/_nwbfile_metadata.py).
_SEXES = ("M", "F", "O", "U")
_SPECIES_FORM = re.compile(r"([A-Z][a-z]* [a-z]+)|(http://purl.obolibrary.org/obo/NCBITaxon_\d+)")
_DURATION = re.compile(
    r"P(?!$)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?"
)


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
    group), so the loader restores them. When no unit has an electrode, a text
    ``location_label`` and a ``group_name`` on every unit are written as the Units'
    ``location`` and ``electrode_group`` columns, which the loader reads back the same way.
    Every other attribute whose value is a bool, int, float or str for every unit becomes a
    Units column. Integer ``unit_id`` values become the table ids; other ids go to a
    ``unit_name`` column. The recording's ``length_ms``, ``start_time`` (and
    ``sampling_rate_hz`` when known) are stored as file attributes; a known rate
    (``sampling_rate_hz`` or ``fs_Hz`` in the metadata) also sets the Units table's
    ``resolution``. The file is written under a temporary name and renamed into place.

    When the file would not pass DANDI's upload validation (no subject, or a subject
    without ``subject_id``, ``species``, ``sex`` or ``age``/``date_of_birth`` in the forms
    DANDI accepts) or has no sampling rate for the Units ``resolution``, a
    :class:`~spikelab.exceptions.DandiReadinessWarning` says what is missing; the file is
    written all the same.

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

    Warns
    -----
    DandiReadinessWarning
        The written file lacks what DANDI requires (see above).
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
    problems = dandi_problems(subject, rate)
    if problems:
        warnings.warn(
            f"{destination} will not pass DANDI's validation: {'; '.join(problems)}. Add them "
            "to the SpikeData's metadata before exporting if the file is meant for DANDI",
            DandiReadinessWarning,
            stacklevel=2,
        )
    return destination


def dandi_problems(subject: Mapping[str, Any], rate: Any) -> list[str]:
    """What an exported file lacks for DANDI: its subject's required fields and a Units rate.

    Parameters
    ----------
    subject : Mapping
        The subject fields written (``subject_id``, ``species``, ``sex``, ``age``,
        ``date_of_birth``); empty when the file has no subject.
    rate : Any
        The sampling rate in Hz that sets the Units ``resolution``; falsy when unknown.

    Returns
    -------
    list of str
        One phrase per problem; empty when DANDI's checks would pass.
    """
    problems = []
    if not subject:
        problems.append("no subject (subject_id, species, sex and age in the metadata)")
    else:
        subject_id, species, sex = (subject.get(k) for k in ("subject_id", "species", "sex"))
        age = subject.get("age")
        if not subject_id or "/" in str(subject_id):
            problems.append("no subject_id (or one with '/')")
        if not species or not _SPECIES_FORM.fullmatch(str(species)):
            problems.append("no species in Latin binomial form (e.g. 'Mus musculus')")
        if sex not in _SEXES:
            problems.append(f"sex must be one of {', '.join(_SEXES)}")
        if age is None and not subject.get("date_of_birth"):
            problems.append("no age or date_of_birth")
        elif age is not None and not _is_age(str(age)):
            problems.append("age is not an ISO 8601 duration (e.g. 'P90D')")
    if not rate:
        problems.append("no sampling rate (sampling_rate_hz or fs_Hz), so no Units resolution")
    return problems


def _is_age(age: str) -> bool:
    """An ISO 8601 duration, or a range of two with one open end at most ('P90Y/')."""
    parts = age.split("/", 1)
    return any(parts) and all(
        _DURATION.fullmatch(p) or (p == "" and len(parts) == 2) for p in parts
    )


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
    device = _device(nwbfile)
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


def _device(nwbfile: Any) -> Any:
    """The file's first device, or a new generic one."""
    if nwbfile.devices:
        return next(iter(nwbfile.devices.values()))
    return nwbfile.create_device(name="probe", description="recording device")


def _units_own_places(nwbfile: Any, attributes: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Region and group of units that have no electrodes row, as Units columns.

    A text ``location_label`` on every unit becomes a ``location`` column, a ``group_name``
    on every unit an ``electrode_group`` reference: the loader turns both back into the same
    attributes.
    """
    columns: dict[str, list[Any]] = {}
    labels = [entry.get("location_label") for entry in attributes]
    if attributes and all(isinstance(label, str) for label in labels):
        nwbfile.add_unit_column(name="location", description="brain region of each unit")
        columns["location"] = labels
    names = [entry.get("group_name") for entry in attributes]
    if attributes and all(isinstance(name, str) and name and "/" not in name for name in names):
        groups = dict(nwbfile.electrode_groups)
        for name, label in zip(names, labels, strict=True):
            if name not in groups:
                groups[name] = nwbfile.create_electrode_group(
                    name=name,
                    description="electrode group",
                    location=label if isinstance(label, str) and label else "unknown",
                    device=_device(nwbfile),
                )
        columns["electrode_group"] = [groups[name] for name in names]
    return columns


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
    # Electrodes rows may exist only from metadata (electrodes_by_channel) with no unit on them.
    with_electrodes = bool(electrode_rows) and any(
        entry.get("electrode") is not None for entry in attributes
    )
    own_places = {} if with_electrodes else _units_own_places(nwbfile, attributes)
    for index, (train, entry) in enumerate(zip(sd.train, attributes, strict=True)):
        row: dict[str, Any] = {
            "spike_times": train / 1000.0,
            "id": int(unit_ids[index]) if integer_ids else index,
        }
        row.update({name: values[index] for name, values in own_places.items()})
        for name in columns:
            row[name] = str(unit_ids[index]) if name == "unit_name" else entry[name]
        if with_electrodes:
            channel = entry.get("electrode")
            rows = [] if channel is None else [electrode_rows[int(channel)]]
            row["electrodes"] = np.asarray(rows, dtype=np.int64)  # typed even when empty
        if with_intervals:
            row["obs_intervals"] = np.asarray(entry["obs_intervals_ms"]) / 1000.0
        nwbfile.add_unit(**row)
