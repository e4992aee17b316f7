"""NWB files for tests, written with the real writers (pynwb, hdmf-zarr, then h5py for edits).

One module of builders every NWB test uses, so a file shape is written once: the rich
two-shank session, files with no units or no spike times, units-only files, units on
electrodes labelled with region strings, a raw series, and small helpers (open a file with
the shared start time, add a shank, write as HDF5 or Zarr, swap one dataset). Every builder
returns the path it wrote; ``*_nwbfile`` builders return the in-memory ``NWBFile`` so a
test can change it before writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries
from pynwb.file import ElectrodeGroup, Subject

START = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
# What rich_nwbfile's units hold, in seconds: unsorted, empty, duplicate.
UNIT_TIMES_S = {11: [0.5, 0.25, 1.0], 12: [], 13: [2.0, 2.0, 3.5]}
# What units_only_file's two units hold, in seconds.
UNITS_ONLY_TIMES_S = [[0.5, 1.5], [2.0]]
BOTH_PATHS = pytest.mark.parametrize("prefer_pynwb", [True, False], ids=["pynwb", "h5py"])


def new_nwbfile(identifier: str = "i", session_description: str = "s", **fields: Any) -> NWBFile:
    """An empty NWBFile starting at ``START``."""
    return NWBFile(
        session_description=session_description,
        identifier=identifier,
        session_start_time=START,
        **fields,
    )


def add_shank(
    nwbfile: NWBFile,
    name: str = "g",
    location: str = "CA1",
    *,
    description: str = "g",
    electrode_id: int | None = None,
    electrode_location: str | None = None,
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> ElectrodeGroup:
    """Add a device ``probe``, one electrode group on it and, given an id, one electrode.

    The electrode's location is the group's unless ``electrode_location`` says otherwise.
    """
    device = nwbfile.create_device(name="probe", description="probe")
    group = nwbfile.create_electrode_group(
        name=name, description=description, location=location, device=device
    )
    if electrode_id is not None:
        x, y, z = xyz
        nwbfile.add_electrode(
            id=electrode_id,
            location=electrode_location if electrode_location is not None else location,
            group=group,
            x=x,
            y=y,
            z=z,
        )
    return group


def write(nwbfile: NWBFile, path: Path, attrs: dict[str, Any] | None = None) -> Path:
    """Write ``nwbfile`` as HDF5 with pynwb, then set root ``attrs`` with h5py."""
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    if attrs:
        with h5py.File(path, "r+") as handle:
            handle.attrs.update(attrs)
    return path


def write_zarr(nwbfile: NWBFile, path: Path) -> Path:
    """Write ``nwbfile`` as a Zarr folder (``*.nwb.zarr``) with hdmf-zarr."""
    from hdmf_zarr.nwb import NWBZarrIO

    with NWBZarrIO(str(path), mode="w") as io:
        io.write(nwbfile)
    return path


def replace_dataset(path: Path, name: str, **create: Any) -> Path:
    """Swap one dataset of an NWB file for another, keeping its NWB attributes."""
    with h5py.File(path, "r+") as handle:
        attributes = dict(handle[name].attrs)
        del handle[name]
        dataset = handle.create_dataset(name, **create)
        dataset.attrs.update(attributes)
    return path


def rich_nwbfile() -> NWBFile:
    """Two shanks in hippocampus, a subject, a 30 kHz series and units 11, 12, 13.

    The units hold ``UNIT_TIMES_S`` with columns quality, snr and a 2-D waveform_peak.
    """
    nwbfile = new_nwbfile(
        "session-42",
        "two shanks in hippocampus",
        subject=Subject(
            subject_id="mouse-7",
            species="Mus musculus",
            sex="F",
            age="P90D",
            date_of_birth=datetime(2024, 1, 1, tzinfo=UTC),
        ),
    )
    probe = nwbfile.create_device(name="probe-b", description="silicon probe")
    nwbfile.create_device(name="probe-a", description="silicon probe")
    shanks = [
        nwbfile.create_electrode_group(
            name=f"shank{i}", description="shank", location=region, device=probe
        )
        for i, region in enumerate(["CA1", "DG"])
    ]
    for channel, (region, group) in enumerate([("CA1", 0), ("CA1", 0), ("DG", 1)]):
        nwbfile.add_electrode(
            id=100 + channel,
            x=10.0 * channel,
            y=20.0,
            z=-30.0,
            location=region,
            group=shanks[group],
        )
    region = nwbfile.create_electrode_table_region([0, 1, 2], "all electrodes")
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=np.zeros((3000, 3), dtype=np.int16),
            electrodes=region,
            rate=30000.0,
        )
    )
    nwbfile.add_unit_column(name="quality", description="curation label")
    nwbfile.add_unit_column(name="snr", description="signal to noise")
    nwbfile.add_unit_column(name="waveform_peak", description="2-D column, not scalar")
    for (unit_id, times), electrode, quality, snr in zip(
        UNIT_TIMES_S.items(), [1, 2, 0], ["good", "mua", "good"], [5.5, 1.0, 3.25], strict=True
    ):
        nwbfile.add_unit(
            id=unit_id,
            spike_times=times,
            electrodes=[electrode],
            quality=quality,
            snr=snr,
            waveform_peak=[1.0, 2.0],
            obs_intervals=[[0.0, 4.0]],
        )
    return nwbfile


def no_units_file(path: Path) -> Path:
    """A raw-only file (identifier ``raw-1``, device ``probe``) with no Units table."""
    nwbfile = new_nwbfile("raw-1", "raw only")
    nwbfile.create_device(name="probe", description="d")
    return write(nwbfile, path)


def units_only_file(
    path: Path,
    *,
    location: list[str] | None = None,
    with_electrodes: bool = False,
    electrode_group: bool = False,
) -> Path:
    """Two units (``UNITS_ONLY_TIMES_S``); optionally a ``location`` column and electrodes.

    The electrode group is ``shankA`` (thalamus); its one electrode, id 7, is in ADN.
    """
    nwbfile = new_nwbfile("edge-1", "edges")
    group = add_shank(nwbfile, "shankA", "thalamus", description="shank")
    if with_electrodes:
        nwbfile.add_electrode(id=7, location="ADN", group=group, x=1.0, y=2.0, z=3.0)
    if location is not None:
        nwbfile.add_unit_column(name="location", description="brain region of the unit")
    for index, times in enumerate(UNITS_ONLY_TIMES_S):
        row: dict[str, Any] = {"spike_times": times}
        if location is not None:
            row["location"] = location[index]
        if with_electrodes:
            row["electrodes"] = [0]
        if electrode_group:
            row["electrode_group"] = group
        nwbfile.add_unit(**row)
    return write(nwbfile, path)


def two_units(path: Path) -> Path:
    """spike_times [0.5, 1.5, 2.0], index [2, 3], ids [0, 1], both units on electrode row 0."""
    return units_only_file(path, with_electrodes=True)


def waveforms_only_file(path: Path) -> Path:
    """A Units table of two units with a peak_amplitude column and no spike_times."""
    nwbfile = new_nwbfile("wave-1")
    nwbfile.create_device(name="probe", description="probe")
    nwbfile.add_unit_column(name="peak_amplitude", description="uV")
    nwbfile.add_unit(peak_amplitude=80.0)
    nwbfile.add_unit(peak_amplitude=55.0)
    return write(nwbfile, path)


def raw_traces_nwbfile(
    data: np.ndarray, rate_hz: float, identifier: str = "raw", *, spacing_um: float = 20.0
) -> NWBFile:
    """An ElectricalSeries ``ElectricalSeries`` of ``data`` (samples x channels) in
    acquisition, each channel an electrode of one CA1 shank ``spacing_um`` apart."""
    nwbfile = new_nwbfile(identifier, "raw traces")
    group = add_shank(nwbfile, "shank0")
    channels = data.shape[1]
    for channel in range(channels):
        nwbfile.add_electrode(x=0.0, y=spacing_um * channel, z=0.0, location="CA1", group=group)
    region = nwbfile.create_electrode_table_region(list(range(channels)), "all")
    nwbfile.add_acquisition(
        ElectricalSeries(name="ElectricalSeries", data=data, electrodes=region, rate=rate_hz)
    )
    return nwbfile


def series_file(path: Path, **timing: Any) -> Path:
    """One unit and a four-sample ElectricalSeries ``raw`` timed by ``timing`` (rate=...)."""
    nwbfile = new_nwbfile()
    add_shank(nwbfile, electrode_id=0)
    region = nwbfile.create_electrode_table_region([0], "the electrode")
    nwbfile.add_acquisition(
        ElectricalSeries(name="raw", data=np.zeros((4, 1)), electrodes=region, **timing)
    )
    nwbfile.add_unit(spike_times=[0.001])
    return write(nwbfile, path)


def units_file(path: Path, unit_times_s: dict[int, list[float]], identifier: str = "units") -> Path:
    """A file of just these units (id -> spike times in seconds), no electrodes."""
    nwbfile = new_nwbfile(identifier)
    for unit_id, times in unit_times_s.items():
        nwbfile.add_unit(id=unit_id, spike_times=times)
    return write(nwbfile, path)


def labelled_units_file(
    path: Path,
    labels: Mapping[int, str],
    *,
    subject: Subject | None = None,
    identifier: str = "labels",
    session_description: str = "s",
) -> Path:
    """One unit per ``unit id -> label``, each on its own electrode located at that label.

    The electrodes (ids 0, 1, ... in ``labels`` order) sit on shank ``shank`` (location
    ``brain``) of device ``probe``; unit ``id`` spikes once, at ``0.5 + 0.001 * id`` s.
    """
    nwbfile = new_nwbfile(identifier, session_description, subject=subject)
    group = add_shank(nwbfile, "shank", "brain", description="shank")
    for electrode, label in enumerate(labels.values()):
        nwbfile.add_electrode(id=electrode, x=0.0, y=0.0, z=0.0, location=label, group=group)
    for electrode, unit_id in enumerate(labels):
        nwbfile.add_unit(id=unit_id, spike_times=[0.5 + 0.001 * unit_id], electrodes=[electrode])
    return write(nwbfile, path)
