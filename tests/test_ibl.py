import ast
import hashlib
import inspect
import io
import json
import re
import sys

import ibl_cache
import numpy as np
import pandas as pd
import pytest
import requests
from ibl_cache import PIDS, build_ibl_cache

import spikelab.loaders.ibl
import spikelab.loaders.ibl._bwm_units as bwm
import spikelab.loaders.ibl.load as ibl
from spikelab.exceptions import DatasetNotFoundError, DigestMismatchError, RemoteError
from spikelab.loaders.ibl import load_spikedata_from_ibl, query_ibl_probes
from spikelab.loaders.ibl._alf_spikes import good_unit_trains
from spikelab.loaders.ibl._bwm_units import bwm_units, clear_bwm_units_cache, with_regions
from spikelab.spikedata import SpikeData

PRIMARY = ("s0", "probe00")
KEY = "aggregates/2024_Q2_IBL_et_al_BWM/clusters.pqt"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return build_ibl_cache(tmp_path_factory.mktemp("one-cache"))


@pytest.fixture(scope="module")
def table(cache):
    return ibl_cache.units_table(cache.eids)


@pytest.fixture(autouse=True)
def offline_guard(monkeypatch):
    """No test reaches a real server: no public ONE, and S3 defaults to a dead loopback port."""

    def no_public_one():
        raise AssertionError("a test tried to connect to OpenAlyx")

    monkeypatch.setattr(bwm, "default_one", no_public_one)
    monkeypatch.setattr(ibl, "default_one", no_public_one)
    monkeypatch.setattr(spikelab.loaders.ibl, "default_one", no_public_one)  # tasks' import
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    clear_bwm_units_cache()
    yield
    clear_bwm_units_cache()


def load(cache, table, session="s0", probe="probe00", **kwargs):
    kwargs.setdefault("one", cache.one)
    kwargs.setdefault("units_table", table)
    return load_spikedata_from_ibl(cache.eids[session], PIDS[(session, probe)], **kwargs)


def documented_defaults(function):
    pattern = re.compile(r"^(\w+) : [^\n]*?, default: (.+)$", re.MULTILINE)
    return {
        name: ast.literal_eval(text) for name, text in pattern.findall(inspect.getdoc(function))
    }


# ---------------------------------------------------------------- loading one probe


def test_only_good_units_ordered_by_cluster_id_in_ms(cache, table):
    sd = load(cache, table)
    assert type(sd) is SpikeData
    assert sd.N == 4
    assert sd.get_neuron_attribute("unit_id") == [0, 2, 4, 5]  # 1 and 3 fail QC
    assert [train.tolist() for train in sd.train] == [
        [250.0, 1250.0, 3000.0],
        [125.0, 750.0, 2000.0],
        [1500.0],
        [],
    ]
    assert sd.length == 3000.0 and sd.start_time == 0.0
    assert sd.metadata["duration_seconds"] == 3.0


def test_file_level_metadata(cache, table):
    sd = load(cache, table)
    eid, pid = cache.eids["s0"], PIDS[PRIMARY]
    assert {key: sd.metadata[key] for key in ("eid", "pid", "identifier", "format")} == {
        "eid": eid,
        "pid": pid,
        "identifier": eid,
        "format": "IBL",
    }
    assert sd.metadata["collection"] == "alf/probe00/pykilosort"
    assert sd.metadata["unit_count"] == 4


def test_accepts_uuid_objects_and_upper_case(cache, table):
    import uuid

    sd = load_spikedata_from_ibl(
        uuid.UUID(cache.eids["s0"]), PIDS[PRIMARY].upper(), one=cache.one, units_table=table
    )
    assert sd.metadata["pid"] == PIDS[PRIMARY]
    assert sd.N == 4


def test_unit_attributes(cache, table):
    sd = load(cache, table)
    assert sd.neuron_attributes[0] == {
        "unit_id": 0,
        "cluster_id": 0,
        "location_label": "MOs",
        "beryl": "MOs",
        "cosmos": "Isocortex",
        "acronym": "MOs5",
        "atlas_id": 767,
        "group_name": "probe00",
        "electrode": 2,
        "location": pytest.approx([-1.5, 1.25, 0.0]),
        "cluster_uuid": ibl_cache.cluster_uuid("s0", "probe00", 0),
        "label": 1.0,
        "firing_rate": 2.5,
        "presence_ratio": 0.96875,
        "amp_median": 6.25e-5,
        "contamination": 0.0,
        "drift": 1.5,
        "noise_cutoff": 0.5,
        "spike_count": 2,
    }
    assert sd.get_neuron_attribute("location_label") == ["MOs", "MOs", "MOp", "CA1"]
    assert sd.get_neuron_attribute("cosmos") == ["Isocortex", "Isocortex", "Isocortex", "HPF"]
    assert sd.get_neuron_attribute("electrode") == [2, 4, 6, 7]
    assert sd.neuron_attributes[3]["location"] == pytest.approx([-1.5, 1.75, -1.25])


def test_regions_computed_when_the_table_has_only_atlas_ids(cache, table):
    bare = table.drop(columns=["Beryl", "Cosmos"])
    sd = load(cache, bare)
    assert sd.get_neuron_attribute("beryl") == ["MOs", "MOs", "MOp", "CA1"]
    assert sd.get_neuron_attribute("cosmos") == ["Isocortex", "Isocortex", "Isocortex", "HPF"]


def test_fixture_regions_agree_with_iblatlas(table):
    recomputed = with_regions(table.drop(columns=["Beryl", "Cosmos"]))
    assert recomputed["Beryl"].tolist() == table["Beryl"].tolist()
    assert recomputed["Cosmos"].tolist() == table["Cosmos"].tolist()


def test_rows_of_units_that_fail_qc_are_ignored(cache, table):
    failing = table.iloc[[0]].assign(cluster_id=1, label=2 / 3)
    sd = load(cache, pd.concat([table, failing], ignore_index=True))
    assert sd.get_neuron_attribute("unit_id") == [0, 2, 4, 5]


@pytest.mark.parametrize(
    ("session", "offset"), [("s0", 0.0), ("s1", 100000.0)], ids=["files", "table"]
)
def test_trials_in_ms_and_behaviour_unconverted(cache, table, session, offset):
    probe = "probe00"
    sd = load(cache, table, session=session, probe=probe)
    meta = sd.metadata
    assert meta["n_trials"] == 3
    expected_ms = {
        "trial_start_times": [0.0, 4000.0, 8000.0],
        "trial_end_times": [3500.0, 7500.0, 11500.0],
        "stim_on_times": [500.0, 4500.0, 8500.0],
        "stim_off_times": [3000.0, 7000.0, 11000.0],
        "go_cue_times": [500.0, 4500.0, 8500.0],
        "response_times": [1250.0, 5000.0, 9750.0],
        "feedback_times": [1250.0, 5000.0, 9750.0],
        "first_movement_times": [1000.0, 4750.0, np.nan],
    }
    for key, values in expected_ms.items():
        np.testing.assert_array_equal(meta[key], np.array(values) + offset, err_msg=key)
        assert meta[key].dtype == np.float64
    np.testing.assert_array_equal(meta["choice"], [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(meta["feedback_type"], [1.0, -1.0, -1.0])
    np.testing.assert_array_equal(meta["contrast_left"], [1.0, np.nan, 0.0625])
    np.testing.assert_array_equal(meta["contrast_right"], [np.nan, 0.25, np.nan])
    np.testing.assert_array_equal(meta["probability_left"], [0.5, 0.8, 0.2])


def test_electrodes_by_channel(cache, table):
    channels = load(cache, table).metadata["electrodes_by_channel"]
    assert sorted(channels) == list(range(ibl_cache.N_CHANNELS))
    assert all(type(channel) is int for channel in channels)
    assert channels[0] == {
        "location": "MOs5",
        "group_name": "probe00",
        "x": -1.5,
        "y": 1.25,
        "z": 0.0,
        "atlas_id": 767,
        "local_x": 43.0,
        "local_y": 0.0,
        "raw_index": 100,
    }
    assert channels[5]["location"] == "CA1"
    assert (channels[5]["z"], channels[5]["local_x"], channels[5]["local_y"]) == (-1.25, 11.0, 40.0)


def test_electrodes_by_channel_with_a_short_column():
    from spikelab.loaders.ibl._metadata import electrodes_by_channel

    channels = {
        "mlapdv": np.array([[1000, 2000, -3000], [0, 0, 0], [0, 0, 0]]),
        "rawInd": np.array([7, 8], dtype=np.uint32),  # one channel short
    }
    described = electrodes_by_channel(channels, "probe00")
    assert sorted(described) == [0, 1, 2]
    assert [described[c]["raw_index"] for c in range(3)] == [7, 8, None]
    assert (described[0]["x"], described[0]["z"], described[2]["y"]) == (1.0, -3.0, 0.0)


def test_offline_session_and_insertion_metadata(cache, table):
    meta = load(cache, table).metadata
    assert {key: meta[key] for key in ("subject_id", "lab", "session_start_time")} == {
        "subject_id": "KS001",
        "lab": ibl_cache.LAB,
        "session_start_time": "2024-03-04",
    }
    assert meta["session_number"] == 1
    assert (meta["probe_name"], meta["probe_model"]) == ("probe00", ibl_cache.PROBE_MODEL)
    assert {key: meta[key] for key in meta if key.startswith("insertion_")} == {
        f"insertion_{axis}": value for axis, value in ibl_cache.INSERTION_JSON.items()
    }
    # Offline there is no subject record, and ONE's cache leaves these empty: absent, not None.
    for absent in ("species", "sex", "date_of_birth", "task_protocol", "project", "qc"):
        assert absent not in meta
    assert not any(value is None for value in meta.values())


class AlyxStandIn:
    """Answers ``rest(endpoint, 'read', id=...)`` from canned records, as Alyx's REST API."""

    def __init__(self, records):
        self.records = records
        self.calls = []

    def rest(self, endpoint, action, id=None, **kwargs):
        self.calls.append((endpoint, action, id))
        record = self.records.get((endpoint, id))
        if record is None:
            raise requests.HTTPError(f"404 Client Error: Not Found for {endpoint}/{id}")
        return record


class OnlineOne:
    """The local ONE presenting itself as online: its Alyx lookups go to the stand-in."""

    offline = False

    def __init__(self, one, alyx):
        self._one = one
        self.alyx = alyx

    def __getattr__(self, name):
        return getattr(self._one, name)


def alyx_records(cache):
    eid, pid = cache.eids["s0"], PIDS[PRIMARY]
    return {
        ("insertions", pid): {
            "id": pid,
            "session": eid,
            "name": "probe00",
            "model": "1.0",
            "json": {"x": -2000.0, "depth": 3840.0, "xyz_picks": [[1, 2, 3]]},
        },
        ("sessions", eid): {
            "subject": "KS001",
            "start_time": "2024-03-04T10:11:12.500000",
            "end_time": "2024-03-04T11:00:00",
            "lab": "cortexlab",
            "task_protocol": "_iblrig_tasks_ephysChoiceWorld6.4.2",
            "projects": ["ibl_neuropixel_brainwide_01"],
            "number": 1,
            "procedures": ["Behavior training/tasks", "Ephys recording with acute probe(s)"],
            "qc": "PASS",
        },
        ("subjects", "KS001"): {
            "species": "Mus musculus",
            "sex": "F",
            "birth_date": "2023-11-06",
            "strain": "C57BL/6J",
            "genotype": [],
            "responsible_user": "someone",
        },
    }


def test_online_records_fill_session_subject_and_insertion(cache, table):
    alyx = AlyxStandIn(alyx_records(cache))
    meta = load(cache, table, one=OnlineOne(cache.one, alyx)).metadata
    expected = {
        "subject_id": "KS001",
        "session_start_time": "2024-03-04T10:11:12.500000",
        "session_end_time": "2024-03-04T11:00:00",
        "lab": "cortexlab",
        "task_protocol": "_iblrig_tasks_ephysChoiceWorld6.4.2",
        "project": "ibl_neuropixel_brainwide_01",
        "session_number": 1,
        "procedures": ["Behavior training/tasks", "Ephys recording with acute probe(s)"],
        "qc": "PASS",
        "species": "Mus musculus",
        "sex": "F",
        "date_of_birth": "2023-11-06",
        "age_weeks": 17.0,
        "strain": "C57BL/6J",
        "responsible_user": "someone",
        "probe_name": "probe00",
        "probe_model": "1.0",
        "insertion_x": -2000.0,
        "insertion_depth": 3840.0,
    }
    assert {key: meta.get(key) for key in expected} == expected
    assert not {"insertion_y", "insertion_theta", "genotype"} & set(meta)
    assert sorted(call[0] for call in alyx.calls) == ["insertions", "sessions", "subjects"]


def test_online_lookup_failures_leave_fields_absent(cache, table):
    records = alyx_records(cache)
    del records[("sessions", cache.eids["s0"])]
    sd = load(cache, table, one=OnlineOne(cache.one, AlyxStandIn(records)))
    assert sd.N == 4
    for absent in ("subject_id", "lab", "session_start_time", "species", "age_weeks"):
        assert absent not in sd.metadata
    assert sd.metadata["probe_model"] == "1.0"


def test_online_insertion_of_another_session_is_refused(cache, table):
    records = alyx_records(cache)
    records[("insertions", PIDS[PRIMARY])]["session"] = cache.eids["s1"]
    with pytest.raises(ValueError, match=f"pid {PIDS[PRIMARY]} is an insertion of session"):
        load(cache, table, one=OnlineOne(cache.one, AlyxStandIn(records)))


# ---------------------------------------------------------------- collections


def test_collection_without_pykilosort_folder(cache, table):
    sd = load(cache, table, session="s1", probe="probe01")
    assert sd.metadata["collection"] == "alf/probe01"
    assert sd.get_neuron_attribute("unit_id") == [0, 1, 2]
    assert [train.tolist() for train in sd.train] == [
        [750.0, 1000.0],
        [1250.0, 1500.0],
        [1750.0, 2000.0],
    ]


def test_explicit_collection(cache, table):
    sd = load(cache, table, collection="alf/probe00/pykilosort")
    assert sd.metadata["collection"] == "alf/probe00/pykilosort"
    assert sd.N == 4


def test_explicit_collection_never_falls_back(cache, table):
    with pytest.raises(DatasetNotFoundError) as info:
        load(cache, table, session="s1", probe="probe01", collection="alf/probe01/pykilosort")
    message = str(info.value)
    assert f"no spikes object for probe {PIDS[('s1', 'probe01')]}" in message
    assert "in the collection given: alf/probe01/pykilosort." in message
    assert isinstance(info.value, KeyError)


def test_missing_probe_collection_lists_collections_tried(cache, table):
    eid, pid = cache.eids["s1"], PIDS[("s1", "probe02")]
    with pytest.raises(DatasetNotFoundError) as info:
        load_spikedata_from_ibl(eid, pid, one=cache.one, units_table=table)
    assert str(info.value) == (
        f"no spikes object for probe {pid} of session {eid} in any of the collections tried: "
        "alf/probe02/pykilosort, alf/probe02, alf. The session has alf, alf/probe00/pykilosort, "
        "alf/probe01; pass collection= naming the probe's spike-sorting collection"
    )


@pytest.fixture(scope="module")
def cache_without_insertions(tmp_path_factory):
    return build_ibl_cache(tmp_path_factory.mktemp("no-insertions"), insertions=False)


def test_offline_probe_name_from_the_units_table(cache_without_insertions):
    cache = cache_without_insertions
    table = ibl_cache.units_table(cache.eids)
    table["probe_name"] = [pid_probe(pid) for pid in table["pid"]]
    sd = load(cache, table, session="s0", probe="probe01")
    assert sd.metadata["collection"] == "alf/probe01/pykilosort"
    assert sd.get_neuron_attribute("unit_id") == [0, 1, 2]
    assert "probe_name" not in sd.metadata  # no insertion record to report


def pid_probe(pid):
    return next(probe for (_, probe), value in PIDS.items() if value == pid)


def test_unknown_probe_name_follows_the_fallback_order_and_warns(cache_without_insertions):
    cache = cache_without_insertions
    table = ibl_cache.units_table(cache.eids)
    pid = PIDS[("s0", "probe01")]
    # Nothing says which probe this is, so the first fallback with spikes wins: probe00's.
    with pytest.warns(UserWarning) as record:
        sd = load(cache, table, session="s0", probe="probe01")
    assert [str(w.message) for w in record] == [
        f"the probe name of pid {pid} is unknown (no insertion record, no probe_name column): "
        "loaded alf/probe00/pykilosort, the first collection of the fallback order with "
        "spikes; pass collection= if that is another probe's"
    ]
    assert record[0].filename == __file__
    assert sd.metadata["collection"] == "alf/probe00/pykilosort"
    assert "electrode" in sd.neuron_attributes[0]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("eid", "pid", "name"),
    [("not-a-uuid", PIDS[PRIMARY], "eid"), (None, "probe00", "pid")],
    ids=["eid", "pid"],
)
def test_ids_must_be_uuids(cache, table, eid, pid, name):
    eid = cache.eids["s0"] if eid is None else eid
    with pytest.raises(ValueError, match=f"^{name} must be an IBL UUID such as"):
        load_spikedata_from_ibl(eid, pid, one=cache.one, units_table=table)


def test_pid_listed_under_another_session(cache, table):
    eid = cache.eids["s1"]
    with pytest.raises(
        ValueError,
        match=f"the units table lists pid {PIDS[PRIMARY]} under session {cache.eids['s0']}",
    ):
        load_spikedata_from_ibl(eid, PIDS[PRIMARY], one=cache.one, units_table=table)


def test_no_spikes_needs_length(cache, table):
    only_silent = table[(table["pid"] != PIDS[PRIMARY]) | (table["cluster_id"] == 5)]
    with pytest.raises(
        ValueError,
        match=rf"probe {PIDS[PRIMARY]} has no spikes from good units \(1 good units in the "
        r"Brain-Wide Map table\): pass length_ms",
    ):
        load(cache, only_silent)
    sd = load(cache, only_silent, length_ms=4000.0)
    assert (sd.N, sd.length, sd.train[0].size) == (1, 4000.0, 0)


def test_explicit_length(cache, table):
    assert load(cache, table, length_ms=5000.0).length == 5000.0
    with pytest.raises(ValueError, match=f"IBL probe {PIDS[PRIMARY]}: a spike at 3000.0 ms"):
        load(cache, table, length_ms=2500.0)


def test_table_clusters_missing_from_the_sorting(cache, table):
    extra = table.iloc[[0]].assign(cluster_id=40)
    with pytest.raises(ValueError, match=r"gives pid .* clusters \[40\] but alf/probe00/pyk"):
        load(cache, pd.concat([table, extra], ignore_index=True))


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int32])
def test_unsigned_cluster_ids_in_the_table(cache, table, dtype):
    """ALF stores clusters as uint32; a table built from them must load the same units."""
    unsigned = table.assign(cluster_id=table["cluster_id"].to_numpy().astype(dtype))
    sd = load(cache, unsigned)
    assert sd.get_neuron_attribute("unit_id") == [0, 2, 4, 5]
    assert all(type(u) is int for u in sd.get_neuron_attribute("unit_id"))
    assert [train.tolist() for train in sd.train] == [
        [250.0, 1250.0, 3000.0],
        [125.0, 750.0, 2000.0],
        [1500.0],
        [],
    ]
    assert sd.get_neuron_attribute("electrode") == [2, 4, 6, 7]


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_huge_unsigned_cluster_ids_are_not_allocated_per_id(dtype):
    spikes = {
        "times": np.array([0.5, 0.25, 1.0, 0.75]),
        "clusters": np.array([4_000_000_000, 3, 4_000_000_000, 9], dtype=dtype),
    }
    times, ends = good_unit_trains(spikes, np.array([3, 4_000_000_000], dtype=dtype), "alf")
    assert (times.tolist(), ends.tolist()) == ([250.0, 500.0, 1000.0], [1, 3])


def test_no_good_clusters_with_unsigned_ids():
    spikes = {"times": np.array([0.5]), "clusters": np.array([1], dtype=np.uint32)}
    times, ends = good_unit_trains(spikes, np.array([], dtype=np.uint32), "alf")
    assert (times.tolist(), ends.tolist()) == ([], [])


@pytest.mark.parametrize(
    ("clusters", "match"),
    [
        (np.array([0.5, 1.0]), "must be whole numbers"),
        (np.array([-1, 1]), r"must lie in 0\.\.2\*\*63 - 1, found -1\.\.1"),
    ],
)
def test_spike_clusters_that_are_not_cluster_ids(clusters, match):
    spikes = {"times": np.array([0.5, 1.0]), "clusters": clusters}
    with pytest.raises(ValueError, match=rf"alf/probe00: cluster ids {match}"):
        good_unit_trains(spikes, np.array([1]), "alf/probe00")


def test_table_without_needed_columns(cache, table):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['cluster_id'\]"):
        load(cache, table.drop(columns=["cluster_id"]))


@pytest.fixture
def no_one_api(monkeypatch):
    for name in ("one", "one.api", "one.alf", "one.alf.exceptions", "one.params"):
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_one_api_names_the_extra(cache, table, no_one_api):
    with pytest.raises(ImportError, match=re.escape("pip install 'spikelab[ibl]'")) as info:
        load_spikedata_from_ibl(cache.eids["s0"], PIDS[PRIMARY], units_table=table)
    assert isinstance(info.value.__cause__, ImportError)


def test_missing_boto3_names_the_s3_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ImportError, match=re.escape("pip install 'spikelab[s3]'")):
        bwm_units(cache_dir=tmp_path)


def test_missing_iblatlas_names_the_ibl_extra(monkeypatch, table):
    monkeypatch.setitem(sys.modules, "iblatlas", None)
    monkeypatch.setitem(sys.modules, "iblatlas.regions", None)
    bwm._brain_regions.cache_clear()
    with pytest.raises(ImportError, match=re.escape("pip install 'spikelab[ibl]'")):
        with_regions(table.drop(columns=["Cosmos"]))


def test_query_needs_no_one_api_with_a_table(table, no_one_api):
    probes, _ = query_ibl_probes(units_table=table)
    assert len(probes) == 4


# ---------------------------------------------------------------- query


def test_query_sorted_by_good_units(cache, table):
    probes, stats = query_ibl_probes(units_table=table)
    s0, s1 = cache.eids["s0"], cache.eids["s1"]
    by_count = [
        (s1, PIDS[("s1", "probe00")], 6),
        (s0, PIDS[("s0", "probe00")], 4),
        (s0, PIDS[("s0", "probe01")], 3),
        (s1, PIDS[("s1", "probe01")], 3),
    ]
    by_count[2:] = sorted(by_count[2:])  # ties: by eid, then pid
    assert probes == [(eid, pid) for eid, pid, _ in by_count]
    assert list(stats.columns) == ["eid", "pid", "n_good_units"]
    assert stats.to_dict("list") == {
        "eid": [row[0] for row in by_count],
        "pid": [row[1] for row in by_count],
        "n_good_units": [row[2] for row in by_count],
    }
    assert all(type(value) is str for pair in probes for value in pair)


def test_query_by_region(cache, table):
    probes, stats = query_ibl_probes(["MOs", "MOp"], units_table=table)
    s0, s1 = cache.eids["s0"], cache.eids["s1"]
    assert probes == [
        (s1, PIDS[("s1", "probe00")]),
        (s0, PIDS[("s0", "probe00")]),
        (s1, PIDS[("s1", "probe01")]),
    ]
    assert list(stats.columns) == [
        "eid",
        "pid",
        "n_good_units",
        "n_in_target",
        "fraction_in_target",
    ]
    assert stats["n_good_units"].tolist() == [6, 4, 3]
    assert stats["n_in_target"].tolist() == [1, 3, 3]
    assert stats["fraction_in_target"].tolist() == [1 / 6, 0.75, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"min_fraction_in_target": 0.5}, [("s0", "probe00"), ("s1", "probe01")]),
        ({"min_fraction_in_target": 1.0}, [("s1", "probe01")]),
        ({"min_units": 4}, [("s1", "probe00"), ("s0", "probe00")]),
        ({"min_units": 4, "min_fraction_in_target": 0.5}, [("s0", "probe00")]),
    ],
)
def test_query_filters(cache, table, kwargs, expected):
    probes, stats = query_ibl_probes(["MOs", "MOp"], units_table=table, **kwargs)
    assert probes == [(cache.eids[s], PIDS[(s, p)]) for s, p in expected]
    assert len(stats) == len(expected)


def test_query_one_region_as_a_string(cache, table):
    probes, stats = query_ibl_probes("CA1", units_table=table)
    assert probes == [
        (cache.eids["s0"], PIDS[PRIMARY]),
        (cache.eids["s0"], PIDS[("s0", "probe01")]),
    ]
    assert stats["n_in_target"].tolist() == [1, 3]


def test_query_min_units_without_regions(cache, table):
    probes, stats = query_ibl_probes(min_units=5, units_table=table)
    assert probes == [(cache.eids["s1"], PIDS[("s1", "probe00")])]
    assert stats["n_good_units"].tolist() == [6]


def test_query_empty_result(table):
    probes, stats = query_ibl_probes(["XYZ"], units_table=table)
    assert probes == []
    assert stats.empty
    assert list(stats.columns) == [
        "eid",
        "pid",
        "n_good_units",
        "n_in_target",
        "fraction_in_target",
    ]
    probes, stats = query_ibl_probes(min_units=100, units_table=table)
    assert probes == [] and list(stats.columns) == ["eid", "pid", "n_good_units"]


def test_query_counts_only_good_rows(cache, table):
    failing = table.iloc[[0, 0, 0]].assign(cluster_id=[1, 3, 9], label=[0.0, 1 / 3, 2 / 3])
    probes, stats = query_ibl_probes(units_table=pd.concat([table, failing], ignore_index=True))
    assert stats.set_index("pid").loc[PIDS[PRIMARY], "n_good_units"] == 4


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"min_units": -1}, ValueError, r"min_units must be >= 0, got -1"),
        ({"min_units": 2.5}, TypeError, r"min_units must be an int, got 2.5"),
        ({"min_fraction_in_target": 1.5}, ValueError, r"must lie in \[0, 1\], got 1.5"),
        ({"target_regions": []}, ValueError, r"target_regions must be Beryl acronyms"),
        ({"target_regions": [993]}, ValueError, r"target_regions must be Beryl acronyms"),
    ],
)
def test_query_rejects_bad_arguments(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        query_ibl_probes(units_table=table, **kwargs)


def test_query_by_region_needs_beryl(table):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['Beryl'\]"):
        query_ibl_probes(["MOs"], units_table=table.drop(columns=["Beryl"]))


# ---------------------------------------------------------------- brainwidemap installed


@pytest.fixture
def brainwidemap_stand_in(tmp_path, monkeypatch, table):
    """A ``brainwidemap`` package whose ``bwm_units(one)`` returns the test table (no Cosmos)."""
    package = tmp_path / "site" / "brainwidemap"
    package.mkdir(parents=True)
    table.drop(columns=["Cosmos"]).to_parquet(package / "units.pqt")
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        "import pandas as pd\n"
        "CALLS = []\n"
        "def bwm_units(one):\n"
        "    CALLS.append(one)\n"
        "    return pd.read_parquet(Path(__file__).with_name('units.pqt'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield package
    sys.modules.pop("brainwidemap", None)


def test_brainwidemap_provides_the_table(cache, table, brainwidemap_stand_in):
    probes, _ = query_ibl_probes(["MOs", "MOp"], one=cache.one)
    sd = load_spikedata_from_ibl(cache.eids["s0"], PIDS[PRIMARY], one=cache.one)
    module = sys.modules["brainwidemap"]
    assert module.CALLS == [cache.one]  # once per process, with the caller's ONE
    assert len(probes) == 3
    assert sd.get_neuron_attribute("cosmos") == ["Isocortex", "Isocortex", "Isocortex", "HPF"]
    assert sd.get_neuron_attribute("unit_id") == [0, 2, 4, 5]


def test_broken_brainwidemap_falls_back_to_the_bucket(
    cache, brainwidemap_stand_in, published, monkeypatch, s3_requests
):
    (brainwidemap_stand_in / "__init__.py").write_text("import brainbox_not_installed\n")
    with pytest.warns(UserWarning, match="brainwidemap is installed but does not import"):
        table = published.bwm_units(one=cache.one)
    assert table["Beryl"].unique().tolist() == ["MOs"]
    assert len(s3_requests) == 1


# ---------------------------------------------------------------- the bucket, on moto


@pytest.fixture
def anonymous_env(monkeypatch, tmp_path):
    """Nothing from the machine's AWS setup; no credentials at all (requests are unsigned)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


class Published:
    def __init__(self, endpoint, uploader, cache_dir):
        self.endpoint = endpoint
        self.uploader = uploader
        self.cache_dir = cache_dir
        self.body = b""

    def put(self, body, multipart=False):
        """Publish ``body`` as the aggregate table: S3 computes the ETag, as on AWS."""
        import boto3.s3.transfer

        self.body = body
        if multipart:
            config = boto3.s3.transfer.TransferConfig(
                multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20
            )
            self.uploader.upload_fileobj(io.BytesIO(body), bwm.BUCKET, KEY, Config=config)
        else:
            self.uploader.put_object(Bucket=bwm.BUCKET, Key=KEY, Body=body)
        return self.uploader.head_object(Bucket=bwm.BUCKET, Key=KEY)["ETag"].strip('"')

    def bwm_units(self, **kwargs):
        kwargs.setdefault("cache_dir", self.cache_dir)
        kwargs.setdefault("s3_endpoint_url", self.endpoint)
        return bwm_units(**kwargs)


def parquet_bytes(table):
    buffer = io.BytesIO()
    table.to_parquet(buffer)
    return buffer.getvalue()


@pytest.fixture
def published(anonymous_env, empty_moto, moto_endpoint, tmp_path):
    """The public bucket on moto, anonymous reads allowed, holding the aggregate table."""
    uploader = empty_moto
    uploader.create_bucket(Bucket=bwm.BUCKET)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bwm.BUCKET}/*",
            }
        ],
    }
    uploader.put_bucket_policy(Bucket=bwm.BUCKET, Policy=json.dumps(policy))
    site = Published(moto_endpoint, uploader, tmp_path / "cache")
    site.put(parquet_bytes(ibl_cache.aggregate_clusters_table()))
    return site


@pytest.fixture
def s3_requests(monkeypatch):
    """Record every HTTP request our S3 clients send: (operation, Range, If-Match)."""
    sent = []
    real_client = bwm.s3_client

    def recording_client(endpoint_url):
        client = real_client(endpoint_url)

        def record(request, event_name, **kwargs):
            operation = event_name.rsplit(".", 1)[-1]
            headers = [request.headers.get(name) for name in ("Range", "If-Match")]
            sent.append((operation, *(h.decode() if isinstance(h, bytes) else h for h in headers)))

        client.meta.events.register("before-send.s3", record)
        return client

    monkeypatch.setattr(bwm, "s3_client", recording_client)
    return sent


def test_download_verified_and_filtered(published, s3_requests):
    table = published.bwm_units()
    assert s3_requests == [("GetObject", None, None)]
    assert table["Beryl"].tolist() == ["MOs"] * 11
    assert table["Cosmos"].tolist() == ["Isocortex"] * 11
    assert table.groupby(["eid", "pid"]).size().to_dict() == {
        ("eid-a", "pid-a"): 6,
        ("eid-b", "pid-b1"): 3,
        ("eid-b", "pid-b2"): 2,
    }
    assert (table["label"] == 1.0).all()
    assert list(table.index) == list(range(11))
    folder = published.cache_dir / "bwm_tables" / "2024_Q2_IBL_et_al_BWM"
    assert sorted(p.name for p in folder.iterdir()) == ["clusters.pqt", "clusters.pqt.md5.json"]
    assert (folder / "clusters.pqt").read_bytes() == published.body
    assert json.loads((folder / "clusters.pqt.md5.json").read_text()) == {
        "bucket": bwm.BUCKET,
        "tag": "2024_Q2_IBL_et_al_BWM",
        "etag": hashlib.md5(published.body).hexdigest(),
        "md5": hashlib.md5(published.body).hexdigest(),
    }


def test_filters_can_be_relaxed(published):
    table = published.bwm_units(min_units_sessions=None)
    assert table.groupby("Beryl").size().to_dict() == {"CA1": 9, "MOs": 11, "VISp": 8}
    table = published.bwm_units(min_qc=None, min_units_sessions=None)
    assert table.groupby("Beryl").size().to_dict() == {"CA1": 9, "MOs": 14, "VISp": 8}


def test_second_call_sends_no_request(published, s3_requests):
    first = published.bwm_units()
    second = published.bwm_units()
    assert len(s3_requests) == 1
    pd.testing.assert_frame_equal(first, second)
    second["Beryl"] = "changed"  # the caller's copy; the memoised table is untouched
    assert published.bwm_units()["Beryl"].unique().tolist() == ["MOs"]


def test_verified_copy_on_disk_is_reused_by_a_new_process(published, s3_requests):
    published.bwm_units()
    clear_bwm_units_cache()  # as a new process would start
    table = published.bwm_units()
    assert len(s3_requests) == 1
    assert len(table) == 11


def test_damaged_copy_on_disk_is_downloaded_again(published, s3_requests):
    published.bwm_units()
    clear_bwm_units_cache()
    path = published.cache_dir / "bwm_tables" / "2024_Q2_IBL_et_al_BWM" / "clusters.pqt"
    path.write_bytes(path.read_bytes()[:-10])
    assert len(published.bwm_units()) == 11
    assert len(s3_requests) == 2
    assert path.read_bytes() == published.body


def test_multipart_etag_is_verified(published, s3_requests):
    table = ibl_cache.aggregate_clusters_table()
    rng = np.random.default_rng(0)
    table["padding"] = [rng.bytes(180_000) for _ in range(len(table))]
    etag = published.put(parquet_bytes(table), multipart=True)
    assert int(etag.split("-")[1]) >= 2  # a multipart ETag: <md5 of part md5s>-<parts>
    assert len(published.bwm_units()) == 11
    assert [request[0] for request in s3_requests] == ["GetObject", "HeadObject"]
    record = published.cache_dir / "bwm_tables" / "2024_Q2_IBL_et_al_BWM" / "clusters.pqt.md5.json"
    assert json.loads(record.read_text()) == {
        "bucket": bwm.BUCKET,
        "tag": "2024_Q2_IBL_et_al_BWM",
        "etag": etag,
        "md5": hashlib.md5(published.body).hexdigest(),
    }
    clear_bwm_units_cache()
    good = hashlib.md5(published.body).hexdigest()
    assert len(published.bwm_units(expected_md5=good, cache_dir=published.cache_dir / "2")) == 11


def test_expected_md5_must_match(published):
    good = hashlib.md5(published.body).hexdigest()
    assert len(published.bwm_units(expected_md5=good.upper())) == 11
    clear_bwm_units_cache()
    with pytest.raises(
        DigestMismatchError,
        match=rf"is corrupt: MD5 {good} but expected_md5 is 0{{32}}; nothing was kept",
    ):
        published.bwm_units(expected_md5="0" * 32, cache_dir=published.cache_dir / "other")
    assert [path for path in (published.cache_dir / "other").rglob("*") if path.is_file()] == []


def test_corrupt_transfer_is_rejected(published, monkeypatch):
    real_blocks = bwm.read_blocks

    def flipped(body):
        for block in real_blocks(body):
            yield bytes([block[0] ^ 1]) + block[1:]

    monkeypatch.setattr(bwm, "read_blocks", flipped)
    etag = hashlib.md5(published.body).hexdigest()
    with pytest.raises(DigestMismatchError, match=f"but its ETag is {etag}; nothing was kept"):
        published.bwm_units()
    assert not (
        published.cache_dir / "bwm_tables" / "2024_Q2_IBL_et_al_BWM" / "clusters.pqt"
    ).exists()
    monkeypatch.setattr(bwm, "read_blocks", real_blocks)
    assert len(published.bwm_units()) == 11  # nothing bad was remembered


def test_transfer_cut_short_resumes(published, monkeypatch, s3_requests):
    import botocore.exceptions

    monkeypatch.setattr(bwm, "CHUNK_BYTES", 512)
    real_blocks = bwm.read_blocks
    cuts = []

    def cut_once(body):
        blocks = real_blocks(body)
        yield next(blocks)
        if not cuts:
            cuts.append(1)
            raise botocore.exceptions.ResponseStreamingError(error="connection reset")
        yield from blocks

    monkeypatch.setattr(bwm, "read_blocks", cut_once)
    assert len(published.bwm_units()) == 11
    etag = hashlib.md5(published.body).hexdigest()
    assert s3_requests == [("GetObject", None, None), ("GetObject", "bytes=512-", f'"{etag}"')]


def test_missing_table_is_a_remote_error(published):
    with pytest.raises(
        RemoteError,
        match=r"could not download s3://ibl-brain-wide-map-public/"
        r"aggregates/no-such-tag/clusters.pqt: NoSuchKey \(HTTP 404\)",
    ) as info:
        published.bwm_units(tag="no-such-tag")
    assert info.value.status == 404
    assert isinstance(info.value, OSError)


def test_aws_endpoint_url_is_honoured(published, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", published.endpoint)
    assert len(bwm_units(cache_dir=published.cache_dir)) == 11


def test_table_goes_under_the_one_cache_dir(published, tmp_path):
    class CacheOnly:
        cache_dir = tmp_path / "one-cache"

    published.bwm_units(one=CacheOnly(), cache_dir=None)
    assert (
        tmp_path / "one-cache" / "bwm_tables" / "2024_Q2_IBL_et_al_BWM" / "clusters.pqt"
    ).is_file()


@pytest.mark.parametrize("configured", [True, False], ids=["configured", "not-for-openalyx"])
def test_default_cache_dir_is_ones_folder_for_the_public_server(
    published, monkeypatch, tmp_path, configured
):
    import one.params

    def get_cache_dir(client):
        assert client == "https://openalyx.internationalbrainlab.org"
        if not configured:
            raise KeyError(client)  # ONE is set up for other servers only
        return tmp_path / "ONE" / "configured"

    monkeypatch.setattr(one.params, "get_cache_dir", get_cache_dir)
    monkeypatch.setattr(one.params, "CACHE_DIR_DEFAULT", str(tmp_path / "ONE"))
    published.bwm_units(cache_dir=None)
    folder = "configured" if configured else "openalyx.internationalbrainlab.org"
    assert (tmp_path / "ONE" / folder / "bwm_tables" / "2024_Q2_IBL_et_al_BWM").is_dir()


def test_both_functions_share_one_download(published, monkeypatch, s3_requests, tmp_path):
    """Query, then load without a table: the aggregate is fetched once, into ONE's cache."""
    cache = build_ibl_cache(tmp_path / "one")
    monkeypatch.setenv("AWS_ENDPOINT_URL", published.endpoint)
    # All in MOs: 7 and 9 units in the two sessions, so the region survives the thinning.
    aggregate = ibl_cache.units_table(cache.eids).drop(columns=["Beryl", "Cosmos"])
    published.put(parquet_bytes(aggregate.assign(atlas_id=767)))
    probes, stats = query_ibl_probes(["MOs"], one=cache.one)
    assert stats["n_good_units"].tolist() == [6, 4, 3, 3]
    sd = load_spikedata_from_ibl(*probes[1], one=cache.one)
    assert sd.metadata["pid"] == PIDS[PRIMARY]
    assert sd.get_neuron_attribute("unit_id") == [0, 2, 4, 5]
    assert sd.get_neuron_attribute("location_label") == ["MOs"] * 4
    assert len(s3_requests) == 1
    assert (cache.root / "bwm_tables" / "2024_Q2_IBL_et_al_BWM" / "clusters.pqt").is_file()


# ---------------------------------------------------------------- docs


@pytest.mark.parametrize("function", [load_spikedata_from_ibl, query_ibl_probes, bwm_units])
def test_documented_defaults_match_the_signature(function):
    documented = documented_defaults(function)
    parameters = inspect.signature(function).parameters
    assert set(documented) == {
        name for name, p in parameters.items() if p.default is not inspect.Parameter.empty
    }
    assert {name: parameters[name].default for name in documented} == documented


def test_importable_from_the_public_paths():
    from spikelab.data_loaders import data_loaders

    assert data_loaders.load_spikedata_from_ibl is load_spikedata_from_ibl
    assert data_loaders.query_ibl_probes is query_ibl_probes
    assert ibl.load_spikedata_from_ibl is load_spikedata_from_ibl
