import sys
import warnings

import h5py
import numpy as np
import pytest
from nwb_fixtures import (
    BOTH_PATHS,
    new_nwbfile,
    no_units_file,
    rich_nwbfile,
    write,
)

from spikelab.exceptions import DandiReadinessWarning
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.nwb import dandi_problems
from spikelab.loaders import load_spikedata_from_nwb
from spikelab.spikedata import SpikeData


@pytest.fixture(scope="module")
def rich_file(tmp_path_factory):
    return write(rich_nwbfile(), tmp_path_factory.mktemp("nwb") / "rich.nwb")


@BOTH_PATHS
def test_rich_file_trains_and_attributes(rich_file, prefer_pynwb):
    sd = load_spikedata_from_nwb(rich_file, prefer_pynwb=prefer_pynwb)
    assert type(sd) is SpikeData
    assert [t.tolist() for t in sd.train] == [[250.0, 500.0, 1000.0], [], [2000.0, 2000.0, 3500.0]]
    assert sd.length == 3500.0 and sd.start_time == 0.0
    assert sd.neuron_attributes == [
        {
            "unit_id": 11,
            "quality": "good",
            "snr": 5.5,
            "electrode": 101,
            "location_label": "CA1",
            "group_name": "shank0",
            "location": [10.0, 20.0, -30.0],
            "obs_intervals_ms": [[0.0, 4000.0]],
        },
        {
            "unit_id": 12,
            "quality": "mua",
            "snr": 1.0,
            "electrode": 102,
            "location_label": "DG",
            "group_name": "shank1",
            "location": [20.0, 20.0, -30.0],
            "obs_intervals_ms": [[0.0, 4000.0]],
        },
        {
            "unit_id": 13,
            "quality": "good",
            "snr": 3.25,
            "electrode": 100,
            "location_label": "CA1",
            "group_name": "shank0",
            "location": [0.0, 20.0, -30.0],
            "obs_intervals_ms": [[0.0, 4000.0]],
        },
    ]


@BOTH_PATHS
def test_rich_file_metadata(rich_file, prefer_pynwb):
    metadata = load_spikedata_from_nwb(rich_file, prefer_pynwb=prefer_pynwb).metadata
    assert metadata == {
        "identifier": "session-42",
        "session_description": "two shanks in hippocampus",
        "session_start_time": "2024-05-06T07:08:09+00:00",
        "subject_id": "mouse-7",
        "species": "Mus musculus",
        "sex": "F",
        "age": "P90D",
        "date_of_birth": "2024-01-01T00:00:00+00:00",
        "device_names": ["probe-a", "probe-b"],
        "sampling_rate_hz": 30000.0,
        "duration_seconds": 0.1,
        "source_file": str(rich_file),
        "format": "nwb",
        "reader": "pynwb" if prefer_pynwb else "h5py",
        "unit_count": 3,
        "electrodes_by_channel": {
            100: {"location": "CA1", "group_name": "shank0", "x": 0.0, "y": 20.0, "z": -30.0},
            101: {"location": "CA1", "group_name": "shank0", "x": 10.0, "y": 20.0, "z": -30.0},
            102: {"location": "DG", "group_name": "shank1", "x": 20.0, "y": 20.0, "z": -30.0},
        },
    }


def test_without_pynwb_the_h5py_path_is_used(rich_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    sd = load_spikedata_from_nwb(rich_file)
    assert sd.metadata["reader"] == "h5py"
    assert sd.train[0].tolist() == [250.0, 500.0, 1000.0]


@BOTH_PATHS
def test_length_and_start_ladders(tmp_path, prefer_pynwb):
    path = write(rich_nwbfile(), tmp_path / "attrs.nwb", {"length_ms": 9000.0, "start_time": 100.0})
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert (sd.length, sd.start_time) == (9000.0, 100.0)
    sd = load_spikedata_from_nwb(
        path, prefer_pynwb=prefer_pynwb, length_ms=5000.0, start_time_ms=-1.0
    )
    assert (sd.length, sd.start_time) == (5000.0, -1.0)
    with pytest.raises(ValueError, match=r"attrs.nwb: a spike at 250.0 ms lies before start_time"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, start_time_ms=300.0)


@BOTH_PATHS
def test_file_without_units(tmp_path, prefer_pynwb):
    path = no_units_file(tmp_path / "raw.nwb")
    with pytest.raises(ValueError, match=r"raw.nwb has no Units table.*allow_no_units=True"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, allow_no_units=True)
    assert sd.N == 0 and sd.length == 0.0
    assert sd.metadata["identifier"] == "raw-1"
    assert sd.metadata["device_names"] == ["probe"]
    assert sd.metadata["unit_count"] == 0


@BOTH_PATHS
def test_units_without_spike_times(tmp_path, prefer_pynwb):
    nwbfile = new_nwbfile()
    nwbfile.add_unit_column(name="quality", description="q")
    nwbfile.add_unit(quality="good")
    path = write(nwbfile, tmp_path / "nospikes.nwb")
    with pytest.raises(ValueError, match=r"nospikes.nwb: the Units table has no spike_times"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)


@BOTH_PATHS
def test_index_past_the_end(tmp_path, prefer_pynwb):
    path = write(rich_nwbfile(), tmp_path / "badindex.nwb")
    with h5py.File(path, "r+") as handle:
        handle["units/spike_times_index"][-1] = 99
    with pytest.raises(ValueError, match=r"badindex.nwb: spike_times_index points past the end"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)


@BOTH_PATHS
def test_truncated_file(rich_file, tmp_path, prefer_pynwb):
    broken = tmp_path / "truncated.nwb"
    broken.write_bytes(rich_file.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"truncated.nwb is not a readable NWB/HDF5 file"):
        load_spikedata_from_nwb(broken, prefer_pynwb=prefer_pynwb)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.nwb"):
        load_spikedata_from_nwb(tmp_path / "absent.nwb")


def plain_hdf5_units(path, ids, electrodes_index=None):
    """A bare HDF5 file with an NWB-like /units group that pynwb cannot open."""
    with h5py.File(path, "w") as handle:
        handle["units/spike_times"] = [0.1, 0.2, 0.3]
        handle["units/spike_times_index"] = [2, 3]
        handle["units/id"] = ids
        handle["general/extracellular_ephys/electrodes/id"] = [5, 6]
        handle["general/extracellular_ephys/electrodes/location"] = ["CA1", "CA3"]
        if electrodes_index is not None:
            handle["units/electrodes"] = [1, 0]
            handle["units/electrodes_index"] = electrodes_index
    return path


def test_pynwb_failure_falls_back_to_h5py(tmp_path):
    path = plain_hdf5_units(tmp_path / "bare.nwb", [4, 9], electrodes_index=[1, 2])
    with pytest.warns(UserWarning, match=r"pynwb could not read .*bare.nwb .*reading it with h5py"):
        sd = load_spikedata_from_nwb(path)
    assert sd.metadata["reader"] == "h5py"
    assert [t.tolist() for t in sd.train] == [[100.0, 200.0], [300.0]]
    assert sd.get_neuron_attribute("unit_id") == [4, 9]
    assert sd.get_neuron_attribute("electrode") == [6, 5]
    assert sd.get_neuron_attribute("location_label") == ["CA3", "CA1"]


def test_string_unit_ids_warn_and_are_kept(tmp_path):
    path = plain_hdf5_units(tmp_path / "strids.nwb", np.array([b"a1", b"b2"], dtype="S2"))
    with pytest.warns(UserWarning, match="Units ids are strings"):
        sd = load_spikedata_from_nwb(path, prefer_pynwb=False)
    assert sd.get_neuron_attribute("unit_id") == ["a1", "b2"]


def test_electrodes_index_past_the_end_warns_with_both_numbers(tmp_path):
    path = plain_hdf5_units(tmp_path / "eidx.nwb", [0, 1], electrodes_index=[1, 5])
    with pytest.warns(UserWarning, match=r"position 5 .* holds 2 entries; the index is truncated"):
        sd = load_spikedata_from_nwb(path, prefer_pynwb=False)
    assert sd.get_neuron_attribute("electrode") == [6, 5]  # its first electrode is in range


def test_electrodes_index_at_the_exact_end_does_not_warn(tmp_path):
    path = plain_hdf5_units(tmp_path / "edge.nwb", [0, 1], electrodes_index=[1, 2])
    sd = load_spikedata_from_nwb(path, prefer_pynwb=False)  # warnings are errors here
    assert sd.get_neuron_attribute("electrode") == [6, 5]


def round_trip_source() -> SpikeData:
    return SpikeData(
        [[0.1, 1.5, 2.25, 999.875], [], [3.0, 17.0 / 3.0]],
        length=1000.0,
        start_time=0.0,
        neuron_attributes=[
            {
                "unit_id": 3,
                "electrode": 0,
                "location": [1.0, 2.0, 3.0],
                "location_label": "CA1",
                "group_name": "shank0",
                "snr": 4.5,
                "quality": "good",
                "n_peaks": 2,
            },
            {
                "unit_id": 7,
                "electrode": 1,
                "location": [1.0, 22.0, 3.0],
                "location_label": "CA3",
                "group_name": "shank0",
                "snr": 2.0,
                "quality": "mua",
                "n_peaks": 1,
            },
            {
                "unit_id": 9,
                "electrode": 0,
                "location": [1.0, 2.0, 3.0],
                "location_label": "CA1",
                "group_name": "shank0",
                "snr": 1.0,
                "quality": "good",
                "n_peaks": 3,
            },
        ],
        metadata={
            "identifier": "abc",
            "session_description": "round trip",
            "session_start_time": "2024-01-02T03:04:05+00:00",
            "subject_id": "m1",
            "species": "Mus musculus",
            "sex": "M",
            "age": "P90D",
            "date_of_birth": "2023-10-01T00:00:00+00:00",
            "device_names": ["probe"],
            "sampling_rate_hz": 30000.0,
        },
    )


@BOTH_PATHS
def test_export_round_trip_is_exact(tmp_path, prefer_pynwb):
    original = round_trip_source()
    path = export_spikedata_to_nwb(original, tmp_path / "out.nwb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nwb"]  # no temp file left
    back = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    for a, b in zip(original.train, back.train, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)
    assert (back.length, back.start_time) == (original.length, original.start_time)
    assert back.neuron_attributes == original.neuron_attributes
    for key, value in original.metadata.items():
        assert back.metadata[key] == value, key
    assert back.metadata["electrodes_by_channel"] == {
        0: {"location": "CA1", "group_name": "shank0", "x": 1.0, "y": 2.0, "z": 3.0},
        1: {"location": "CA3", "group_name": "shank0", "x": 1.0, "y": 22.0, "z": 3.0},
    }


def test_reexport_of_a_loaded_file_round_trips(rich_file, tmp_path):
    loaded = load_spikedata_from_nwb(rich_file)
    again = load_spikedata_from_nwb(export_spikedata_to_nwb(loaded, tmp_path / "again.nwb"))
    assert [t.tolist() for t in again.train] == [t.tolist() for t in loaded.train]
    assert again.neuron_attributes == loaded.neuron_attributes
    assert again.metadata["electrodes_by_channel"] == loaded.metadata["electrodes_by_channel"]


def test_export_with_string_ids_and_no_electrodes(tmp_path):
    sd = SpikeData([[1.0], [2.0]], neuron_attributes=[{"unit_id": "a"}, {"unit_id": "b"}])
    with pytest.warns(DandiReadinessWarning):
        path = export_spikedata_to_nwb(sd, tmp_path / "s.nwb")
    back = load_spikedata_from_nwb(path)
    assert back.neuron_attributes == [
        {"unit_id": 0, "unit_name": "a"},
        {"unit_id": 1, "unit_name": "b"},
    ]
    assert back.length == 2.0


def test_exported_file_passes_nwbinspector(tmp_path):
    from nwbinspector import Importance, inspect_nwbfile

    path = export_spikedata_to_nwb(round_trip_source(), tmp_path / "inspect.nwb")
    serious = [
        message
        for message in inspect_nwbfile(nwbfile_path=str(path))
        if message.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION)
    ]
    assert serious == []


def test_export_without_pynwb_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynwb", None)
    with pytest.raises(ImportError, match=r"pip install 'spikelab\[nwb\]'"):
        export_spikedata_to_nwb(round_trip_source(), tmp_path / "x.nwb")


def test_export_warns_when_dandi_would_reject_the_file(tmp_path):
    from nwbinspector import Importance, inspect_nwbfile, load_config

    sd = SpikeData([[1.0, 2.0]], length=10.0)
    with pytest.warns(DandiReadinessWarning) as caught:
        path = export_spikedata_to_nwb(sd, tmp_path / "bare.nwb")
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"{path} will not pass DANDI's validation: no subject")
    assert "no sampling rate (sampling_rate_hz or fs_Hz), so no Units resolution" in message
    found = list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))
    checks = {m.check_function_name for m in found if m.importance == Importance.CRITICAL}
    assert "check_subject_exists" in checks  # nwbinspector, as DANDI runs it, agrees
    assert "check_units_resolution_is_set" in {m.check_function_name for m in found}


GOOD_SUBJECT = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({}, None),
        ({"age": "P1D/"}, None),
        ({"age": None, "date_of_birth": "2024-01-01"}, None),
        ({"subject_id": "a/b"}, "no subject_id (or one with '/')"),
        ({"species": "mouse"}, "no species in Latin binomial form"),
        ({"sex": "female"}, "sex must be one of M, F, O, U"),
        ({"age": "90 days"}, "age is not an ISO 8601 duration"),
        ({"age": None}, "no age or date_of_birth"),
    ],
)
def test_dandi_problems_follow_dandis_subject_rules(change, problem):
    subject = {k: v for k, v in {**GOOD_SUBJECT, **change}.items() if v is not None}
    problems = dandi_problems(subject, 30000.0)
    assert len(problems) == (0 if problem is None else 1)
    assert problem is None or problems[0].startswith(problem)


DANDI_READY = {
    "subject_id": "m1",
    "species": "Mus musculus",
    "sex": "M",
    "age": "P60D",
    "sampling_rate_hz": 20000.0,
}


@BOTH_PATHS
def test_units_placed_by_their_own_columns_round_trip(tmp_path, prefer_pynwb):
    """Units with a region and a group but no electrode row (as pynapple's NeuroSuite files)."""
    attributes = [
        {"unit_id": 0, "group": 0, "location_label": "adn", "group_name": "group0_"},
        {"unit_id": 5, "group": 1, "location_label": "", "group_name": "group1_"},
    ]
    sd = SpikeData(
        [[1.0, 2.0], [3.0]],
        length=10.0,
        neuron_attributes=attributes,
        metadata={
            **DANDI_READY,
            "electrodes_by_channel": {
                0: {"location": "adn", "group_name": "group0_", "x": 0.0, "y": 0.0, "z": 0.0}
            },
        },
    )
    path = export_spikedata_to_nwb(sd, tmp_path / "places.nwb")
    back = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert back.neuron_attributes == attributes
    assert back.metadata["electrodes_by_channel"] == sd.metadata["electrodes_by_channel"]
    assert [t.tolist() for t in back.train] == [[1.0, 2.0], [3.0]]


def test_export_of_a_dandi_ready_recording_does_not_warn(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # seen even where a filter ignores the category
        export_spikedata_to_nwb(round_trip_source(), tmp_path / "ready.nwb")
    assert [w for w in caught if issubclass(w.category, DandiReadinessWarning)] == []
