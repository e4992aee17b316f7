"""NWB files shaped like the ones other labs publish, and files broken on purpose.

Each file is written with pynwb (as real ones are) and, for the broken ones, one dataset is
then replaced with h5py. Every case runs through both readers where pynwb can open the
file, and must give the same result.
"""

import contextlib
import math

import h5py
import numpy as np
import pytest
from nwb_fixtures import (
    BOTH_PATHS,
    add_shank,
    new_nwbfile,
    replace_dataset,
    series_file,
    two_units,
    units_only_file,
    waveforms_only_file,
    write,
)

from spikelab.exceptions import FileFormatError, NoUnitsError
from spikelab.loaders import load_spikedata_from_nwb

# --- 12.1: a text location column never lands in `location` ---------------------------------


@BOTH_PATHS
def test_text_location_without_electrodes_becomes_location_label(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "loc.nwb", location=["CA1", ""])
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.neuron_attributes == [
        {"unit_id": 0, "location_label": "CA1"},
        {"unit_id": 1, "location_label": ""},
    ]
    assert [t.tolist() for t in sd.train] == [[500.0, 1500.0], [2000.0]]


@BOTH_PATHS
def test_text_location_beside_electrodes_is_kept_under_another_name(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "both.nwb", location=["adn", ""], with_electrodes=True)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    expected = {
        "electrode": 7,
        "location_label": "ADN",
        "group_name": "shankA",
        "location": [1.0, 2.0, 3.0],
    }
    assert sd.neuron_attributes == [
        {"unit_id": 0, **expected, "units_location": "adn"},
        {"unit_id": 1, **expected, "units_location": ""},
    ]


@BOTH_PATHS
def test_numeric_location_column_is_a_coordinate(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "depth.nwb", location=[120.5, 80.0])
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.get_neuron_attribute("location") == [[120.5], [80.0]]


@BOTH_PATHS
def test_columns_named_like_structural_keys_never_overwrite_them(tmp_path, prefer_pynwb):
    nwbfile = new_nwbfile()
    add_shank(nwbfile, "g0", "CA3", electrode_id=3, xyz=(0.0, 1.0, 2.0))
    for name in ("unit_id", "electrode", "group_name"):
        nwbfile.add_unit_column(name=name, description=f"a column named {name}")
    nwbfile.add_unit(
        id=40, spike_times=[1.0], electrodes=[0], unit_id=9, electrode=12, group_name="x"
    )
    sd = load_spikedata_from_nwb(write(nwbfile, tmp_path / "named.nwb"), prefer_pynwb=prefer_pynwb)
    assert sd.neuron_attributes == [
        {
            "unit_id": 40,
            "electrode": 3,
            "location_label": "CA3",
            "group_name": "g0",
            "location": [0.0, 1.0, 2.0],
            "units_unit_id": 9,
            "units_electrode": 12,
            "units_group_name": "x",
        }
    ]


# --- 12.8: object references, duration ------------------------------------------------------


@BOTH_PATHS
def test_electrode_group_reference_names_the_group(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "groups.nwb", electrode_group=True)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.neuron_attributes == [
        {"unit_id": 0, "group_name": "shankA"},
        {"unit_id": 1, "group_name": "shankA"},
    ]


@BOTH_PATHS
def test_electrode_group_reference_beside_electrodes_leaves_only_plain_values(
    tmp_path, prefer_pynwb
):
    path = units_only_file(tmp_path / "g.nwb", with_electrodes=True, electrode_group=True)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    for entry in sd.neuron_attributes:
        assert entry == {
            "unit_id": entry["unit_id"],
            "electrode": 7,
            "location_label": "ADN",
            "group_name": "shankA",
            "location": [1.0, 2.0, 3.0],
        }


@BOTH_PATHS
def test_duration_is_none_when_nothing_says_it(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "nodur.nwb")
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.metadata["duration_seconds"] is None
    assert sd.metadata["sampling_rate_hz"] is None
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, length_ms=4000.0)
    assert sd.metadata["duration_seconds"] == 4.0


# --- 12.2: Units without spike_times, several *_spike_times -----------------------------------


@BOTH_PATHS
def test_units_without_spike_times_is_a_value_error_naming_the_file(tmp_path, prefer_pynwb):
    path = waveforms_only_file(tmp_path / "waves.nwb")
    with pytest.raises(NoUnitsError, match=r"waves.nwb: the Units table has no spike_times") as e:
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert not isinstance(e.value, FileFormatError)
    assert isinstance(e.value, ValueError)
    assert "allow_no_units=True" in str(e.value)


@BOTH_PATHS
def test_units_without_spike_times_allowed_gives_no_units_and_warns(tmp_path, prefer_pynwb):
    path = waveforms_only_file(tmp_path / "waves.nwb")
    with pytest.warns(UserWarning, match=r"waves.nwb: .*no spike_times.*loaded with no units"):
        sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, allow_no_units=True)
    assert sd.N == 0 and sd.length == 0.0
    assert sd.metadata["identifier"] == "wave-1"
    assert sd.metadata["device_names"] == ["probe"]
    assert sd.metadata["unit_count"] == 0


@BOTH_PATHS
def test_exact_spike_times_wins_over_other_spike_times_columns(tmp_path, prefer_pynwb):
    nwbfile = new_nwbfile()
    nwbfile.add_unit_column(name="curated_spike_times", description="ragged", index=True)
    nwbfile.add_unit_column(name="first_spike_times", description="one per unit")
    nwbfile.add_unit(spike_times=[1.0, 2.0], curated_spike_times=[9.0], first_spike_times=1.0)
    nwbfile.add_unit(spike_times=[3.0], curated_spike_times=[8.0, 9.5], first_spike_times=3.0)
    path = write(nwbfile, tmp_path / "multi.nwb")
    with h5py.File(path, "r+") as handle:  # a flat one whose length fits no unit count
        handle["units/raw_spike_times"] = [0.1, 0.2, 0.3, 0.4, 0.5]
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert [t.tolist() for t in sd.train] == [[1000.0, 2000.0], [3000.0]]
    assert sd.neuron_attributes == [
        {"unit_id": 0, "first_spike_times": 1.0},
        {"unit_id": 1, "first_spike_times": 3.0},
    ]


# --- 14: bad inputs, each one clear error naming the file and the rule --------------------------


BAD_INPUTS = {
    "text_times": (
        {"name": "units/spike_times", "data": np.array([b"0.5", b"1.5", b"2.0"])},
        r"text_times.nwb: spike_times holds text where numbers belong \(times in seconds\)",
    ),
    "short_ids": (
        {"name": "units/id", "data": np.array([0])},
        r"short_ids.nwb: the Units table has 1 entries in id but 2 in spike_times_index",
    ),
    "huge": (
        {"name": "units/spike_times", "shape": (10**11,), "dtype": "f8", "chunks": (4096,)},
        r"huge.nwb: spike_times declares 100000000000 values \(800.0 GB\) but the file stores "
        r"0 bytes",
    ),
    "fractional_index": (
        {"name": "units/spike_times_index", "data": np.array([1.5, 3.0])},
        r"fractional_index.nwb: spike_times_index holds the non-whole offset 1.5; .*refuses to "
        r"truncate",
    ),
    "nan_index": (
        {"name": "units/spike_times_index", "data": np.array([np.nan, 3.0])},
        r"nan_index.nwb: spike_times_index holds the non-whole offset nan",
    ),
    "text_electrodes": (
        {"name": "units/electrodes", "data": np.array([b"0", b"0"])},
        r"text_electrodes.nwb: electrodes holds text where numbers belong \(row numbers\)",
    ),
    "two_d_times": (
        {"name": "units/spike_times", "data": np.array([[0.5, 1.5, 2.0]] * 2).T},
        r"two_d_times.nwb: spike_times has shape \(3, 2\); it must be one-dimensional",
    ),
    "decreasing_index": (
        {"name": "units/spike_times_index", "data": np.array([3, 2])},
        r"decreasing_index.nwb: spike_times_index decreases at entry 1 \(3 then 2\)",
    ),
    "negative_index": (
        {"name": "units/spike_times_index", "data": np.array([-1, 3])},
        r"negative_index.nwb: spike_times_index holds the negative offset -1",
    ),
    "index_past_end": (
        {"name": "units/spike_times_index", "data": np.array([2, 7])},
        r"index_past_end.nwb: spike_times_index points past the end of spike_times \(7 > 3",
    ),
}


PYNWB_REFUSES = {"short_ids", "text_electrodes"}  # hdmf fails to build these tables


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_error(tmp_path, case):
    create, message = BAD_INPUTS[case]
    path = replace_dataset(two_units(tmp_path / f"{case}.nwb"), **create)
    with pytest.raises(FileFormatError, match=message):
        load_spikedata_from_nwb(path, prefer_pynwb=False)
    if case in PYNWB_REFUSES:  # pynwb itself refuses the table: its reason, then h5py's error
        with pytest.warns(UserWarning, match=rf"pynwb could not read .*{case}.nwb \(Construct"):
            with pytest.raises(FileFormatError, match=message):
                load_spikedata_from_nwb(path)
    else:
        with pytest.raises(FileFormatError, match=message):
            load_spikedata_from_nwb(path)


def test_huge_declared_dataset_leaves_the_file_tiny(tmp_path):
    create, _ = BAD_INPUTS["huge"]
    path = replace_dataset(two_units(tmp_path / "huge.nwb"), **create)
    assert path.stat().st_size < 1_000_000


def test_fractional_electrodes_index_is_refused(tmp_path):
    path = units_only_file(tmp_path / "eidx.nwb", with_electrodes=True)
    replace_dataset(path, "units/electrodes_index", data=np.array([0.5, 2.0]))
    with pytest.raises(FileFormatError, match=r"eidx.nwb: electrodes_index holds the non-whole"):
        load_spikedata_from_nwb(path, prefer_pynwb=False)


def test_whole_floats_for_index_and_ids_are_accepted(tmp_path):
    path = two_units(tmp_path / "matlab.nwb")
    replace_dataset(path, "units/spike_times_index", data=np.array([2.0, 3.0]))
    replace_dataset(path, "units/id", data=np.array([4.0, 5.0]))
    sd = load_spikedata_from_nwb(path, prefer_pynwb=False)
    assert [t.tolist() for t in sd.train] == [[500.0, 1500.0], [2000.0]]
    assert sd.get_neuron_attribute("unit_id") == [4, 5]


def test_a_large_column_the_file_really_stores_is_read(tmp_path, monkeypatch):
    from spikelab.loaders.nwb import _checks

    monkeypatch.setattr(_checks, "SMALL_COLUMN_BYTES", 8)  # check every column
    sd = load_spikedata_from_nwb(two_units(tmp_path / "ok.nwb"), prefer_pynwb=False)
    assert [t.tolist() for t in sd.train] == [[500.0, 1500.0], [2000.0]]
    assert not math.isnan(sd.length)


@BOTH_PATHS
def test_a_second_table_region_column_is_left_out_by_both_readers(tmp_path, prefer_pynwb):
    nwbfile = new_nwbfile()
    add_shank(nwbfile, electrode_id=0)
    nwbfile.add_unit_column(
        name="peak_electrode", description="row", table=nwbfile.electrodes, index=False
    )
    nwbfile.add_unit(spike_times=[1.0], peak_electrode=0)
    sd = load_spikedata_from_nwb(write(nwbfile, tmp_path / "region.nwb"), prefer_pynwb=prefer_pynwb)
    assert sd.neuron_attributes == [{"unit_id": 0}]


def test_a_lone_suffixed_spike_times_column_is_used(tmp_path):
    with h5py.File(tmp_path / "suffix.nwb", "w") as handle:
        handle["units/sorted_spike_times"] = [0.1, 0.2, 0.3]
        handle["units/sorted_spike_times_index"] = [1, 3]
        handle["units/id"] = [8, 9]
    sd = load_spikedata_from_nwb(tmp_path / "suffix.nwb", prefer_pynwb=False)
    assert [t.tolist() for t in sd.train] == [[100.0], [200.0, 300.0]]
    assert sd.get_neuron_attribute("unit_id") == [8, 9]


@BOTH_PATHS
def test_a_zero_rate_says_nothing_about_timing(tmp_path, prefer_pynwb):
    path = series_file(tmp_path / "rate0.nwb", rate=1000.0)
    with h5py.File(path, "r+") as handle:
        handle["acquisition/raw/starting_time"].attrs["rate"] = 0.0
    pynwb_says = pytest.warns(UserWarning, match="rate of 0.0 Hz")  # pynwb's own warning
    with pynwb_says if prefer_pynwb else contextlib.nullcontext():
        metadata = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb).metadata
    assert (metadata["sampling_rate_hz"], metadata["duration_seconds"]) == (None, None)


@BOTH_PATHS
def test_repeated_first_timestamps_say_nothing_about_timing(tmp_path, prefer_pynwb):
    path = series_file(tmp_path / "stamps.nwb", timestamps=[0.5, 0.5, 0.6, 0.7])
    metadata = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb).metadata
    assert (metadata["sampling_rate_hz"], metadata["duration_seconds"]) == (None, None)
    path = series_file(tmp_path / "good.nwb", timestamps=[0.5, 0.75, 1.0, 1.25])
    metadata = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb).metadata
    assert (metadata["sampling_rate_hz"], metadata["duration_seconds"]) == (4.0, 1.0)


@BOTH_PATHS
def test_text_that_is_not_utf8_is_read_as_latin1(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "latin1.nwb", location=["CA1", "CA3"])
    replace_dataset(path, "units/location", data=np.array([b"r\xe9gion", b"CA3"], dtype="S7"))
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.get_neuron_attribute("location_label") == ["région", "CA3"]
