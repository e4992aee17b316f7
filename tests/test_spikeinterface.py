from unittest import mock

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import spikeinterface.core as si

from spikelab.loaders import (
    load_spikedata_from_hdf5_raw_thresholded,
    load_spikedata_from_spikeinterface,
    load_spikedata_from_spikeinterface_recording,
)
from spikelab.spikedata import SpikeData

FS = 10000.0


class PlainSorting:
    """A duck-typed sorting: only the methods the loader may use."""

    def __init__(self, trains, fs=FS, properties=None):
        self.trains, self.fs, self.properties = trains, fs, properties or {}

    def get_unit_ids(self):
        return list(self.trains)

    def get_sampling_frequency(self):
        return self.fs

    def get_unit_spike_train(self, unit_id, segment_index=0):
        return np.asarray(self.trains[unit_id])

    def get_property(self, name):
        return self.properties[name]


@pytest.fixture
def numpy_sorting():
    sorting = si.NumpySorting.from_unit_dict(
        [{"a": np.array([10, 30]), "b": np.array([], dtype=np.int64), "c": np.array([5, 20, 40])}],
        sampling_frequency=FS,
    )
    sorting.set_property("channel", np.array([3, 1, 2]))
    sorting.set_property("location", np.array([[0.0, 10.0], [5.0, 15.0], [1.0, 2.0]]))
    sorting.set_property("quality", np.array(["good", "mua", "good"]))
    return sorting


def test_real_sorting_uses_spike_vector_and_properties(numpy_sorting):
    sd = load_spikedata_from_spikeinterface(numpy_sorting)
    assert [t.tolist() for t in sd.train] == [[1.0, 3.0], [], [0.5, 2.0, 4.0]]
    assert sd.neuron_attributes == [
        {"unit_id": "a", "electrode": 3, "location": [0.0, 10.0], "quality": "good"},
        {"unit_id": "b", "electrode": 1, "location": [5.0, 15.0], "quality": "mua"},
        {"unit_id": "c", "electrode": 2, "location": [1.0, 2.0], "quality": "good"},
    ]
    assert sd.metadata["fs_Hz"] == FS and sd.metadata["format"] == "spikeinterface"
    assert sd.length == 4.0


def test_unit_ids_keep_the_callers_order(numpy_sorting):
    sd = load_spikedata_from_spikeinterface(numpy_sorting, unit_ids=["c", "a"])
    assert sd.get_neuron_attribute("unit_id") == ["c", "a"]
    assert [t.tolist() for t in sd.train] == [[0.5, 2.0, 4.0], [1.0, 3.0]]


def test_sampling_frequency_override(numpy_sorting):
    sd = load_spikedata_from_spikeinterface(numpy_sorting, sampling_frequency=20000.0)
    assert sd.train[0].tolist() == [0.5, 1.5]


def test_length_comes_from_a_registered_recording():
    recording = si.generate_recording(num_channels=2, durations=[1.5], sampling_frequency=FS)
    sorting = si.generate_sorting(num_units=4, durations=[1.5], sampling_frequency=FS, seed=1)
    sorting.register_recording(recording)
    sd = load_spikedata_from_spikeinterface(sorting)
    assert sd.length == 1500.0
    for unit_id, train in zip(sorting.get_unit_ids(), sd.train, strict=True):
        np.testing.assert_allclose(train, sorting.get_unit_spike_train(unit_id) / FS * 1000)


def test_multi_segment_sorting():
    sorting = si.NumpySorting.from_unit_dict(
        [{0: np.array([1, 2])}, {0: np.array([7])}], sampling_frequency=1000.0
    )
    assert load_spikedata_from_spikeinterface(sorting, segment_index=1).train[0].tolist() == [7.0]


def test_duck_typed_sorting():
    sorting = PlainSorting(
        {7: [100, 300], 2: [50]},
        properties={"channel": [4, 5], "location": np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])},
    )
    sd = load_spikedata_from_spikeinterface(sorting)
    assert sd.get_neuron_attribute("unit_id") == [7, 2]
    assert [t.tolist() for t in sd.train] == [[10.0, 30.0], [5.0]]
    assert sd.get_neuron_attribute("electrode") == [4, 5]
    assert sd.get_neuron_attribute("location") == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert "quality" not in sd.neuron_attributes[0]  # KeyError means "no such property"


def test_mock_that_answers_everything_uses_the_plain_path():
    sorting = mock.MagicMock()
    sorting.get_unit_ids.return_value = [0, 1]
    sorting.get_sampling_frequency.return_value = 1000.0
    sorting.get_unit_spike_train.side_effect = lambda unit_id, segment_index=0: np.array(
        [unit_id + 1, unit_id + 5]
    )
    sd = load_spikedata_from_spikeinterface(sorting)
    assert [t.tolist() for t in sd.train] == [[1.0, 5.0], [2.0, 6.0]]
    assert sd.neuron_attributes == [{"unit_id": 0}, {"unit_id": 1}]
    sorting.to_spike_vector.assert_not_called()


@pytest.mark.parametrize(
    ("sorting", "kwargs", "error", "match"),
    [
        (object(), {}, TypeError, "lacks get_unit_ids, get_sampling_frequency"),
        (PlainSorting({0: [1]}, fs=0.0), {}, ValueError, "must be positive and finite"),
        (PlainSorting({0: [1]}, fs=-3.0), {}, ValueError, "must be positive and finite"),
        (PlainSorting({0: [1]}), {"sampling_frequency": -100.0}, ValueError, "positive"),
        (PlainSorting({0: [1]}), {"unit_ids": [0, 5, 6]}, ValueError, r"unit ids \[5, 6\] are not"),
    ],
)
def test_sorting_errors(sorting, kwargs, error, match):
    with pytest.raises(error, match=match):
        load_spikedata_from_spikeinterface(sorting, **kwargs)


@pytest.mark.parametrize("real", [True, False])
def test_empty_unit_ids_give_an_empty_spikedata(numpy_sorting, real):
    sorting = numpy_sorting if real else PlainSorting({0: [10], 1: [20]})
    sd = load_spikedata_from_spikeinterface(sorting, unit_ids=[])
    assert type(sd) is SpikeData
    assert (sd.N, sd.train, sd.neuron_attributes, sd.length) == (0, [], [], 0.0)
    assert sd.metadata["fs_Hz"] == FS


@pytest.mark.parametrize("real", [True, False])
def test_text_location_becomes_location_label(real):
    regions = np.array(["CA1", "DG"])
    if real:
        sorting = si.NumpySorting.from_unit_dict(
            [{0: np.array([10]), 1: np.array([20])}], sampling_frequency=FS
        )
        sorting.set_property("location", regions)
    else:
        sorting = PlainSorting({0: [10], 1: [20]}, properties={"location": regions})
    sd = load_spikedata_from_spikeinterface(sorting)
    assert sd.neuron_attributes == [
        {"unit_id": 0, "location_label": "CA1"},
        {"unit_id": 1, "location_label": "DG"},
    ]


def test_text_location_beside_a_location_label_keeps_both():
    sorting = PlainSorting(
        {0: [10]},
        properties={"location": [b"adn"], "location_label": ["AD"], "channel": ["A1"]},
    )
    sd = load_spikedata_from_spikeinterface(sorting)
    # text channel names are not channel numbers: they stay under their own name
    assert sd.neuron_attributes == [
        {"unit_id": 0, "location_text": "adn", "location_label": "AD", "channel": "A1"}
    ]


def test_text_location_reaches_the_units_table_as_a_label(tmp_path):
    from spikelab.io.units_table import write_units_table

    sorting = PlainSorting({0: [10], 1: [20]}, properties={"location": ["CA1", "DG"]})
    sd = load_spikedata_from_spikeinterface(sorting)
    out = write_units_table(sd, tmp_path / "u.parquet", source="s", dataset_id="d", asset_id="a")
    rows = pq.read_table(tmp_path / "u.parquet").to_pylist()
    assert [r["location_label"] for r in rows] == ["CA1", "DG"]
    assert out["skipped_columns"] == {}


def test_scalar_location_per_unit_is_wrapped_in_a_list():
    sorting = PlainSorting({0: [10], 1: [20]}, properties={"location": np.array([42.0, 7])})
    sd = load_spikedata_from_spikeinterface(sorting)
    assert sd.get_neuron_attribute("location") == [[42.0], [7.0]]


@pytest.mark.parametrize("real", [True, False])
def test_property_shorter_than_the_unit_list_fills_the_first_units(real):
    units = {0: [10], 1: [20], 2: [30]}
    if real:
        sorting = si.NumpySorting.from_unit_dict(
            [{k: np.array(v) for k, v in units.items()}], sampling_frequency=FS
        )
        sorting._properties["quality"] = np.array(["good", "mua"])  # set_property refuses
    else:
        sorting = PlainSorting(units, properties={"quality": ["good", "mua"]})
    sd = load_spikedata_from_spikeinterface(sorting)
    assert sd.get_neuron_attribute("quality") == ["good", "mua", None]
    assert "quality" not in sd.neuron_attributes[2]
    picked = load_spikedata_from_spikeinterface(sorting, unit_ids=[2, 1])
    assert picked.neuron_attributes == [{"unit_id": 2}, {"unit_id": 1, "quality": "mua"}]


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_unsigned_unit_ids(dtype):
    ids = np.array([4_000_000_000, 3], dtype=dtype)
    real = si.NumpySorting.from_unit_dict(
        [{ids[0]: np.array([10, 30]), ids[1]: np.array([20])}], sampling_frequency=FS
    )
    duck = PlainSorting({ids[0]: [10, 30], ids[1]: [20]}, properties={"channel": ids[::-1]})
    for sorting in (real, duck):
        sd = load_spikedata_from_spikeinterface(sorting, unit_ids=[3, 4_000_000_000])
        assert sd.get_neuron_attribute("unit_id") == [3, 4_000_000_000]
        assert all(type(u) is int for u in sd.get_neuron_attribute("unit_id"))
        assert [t.tolist() for t in sd.train] == [[2.0], [1.0, 3.0]]
    assert sd.get_neuron_attribute("electrode") == [4_000_000_000, 3]


@pytest.fixture(scope="module")
def traces():
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, size=(4, 30000)).astype(np.float32)
    data[1, 5000:5010] -= 40
    data[1, 15000:15010] -= 40
    data[2, 22000:22010] += 40
    return data


@pytest.mark.parametrize("filter_option", [False, True])
def test_recording_equals_the_raw_hdf5_loader(tmp_path, traces, filter_option):
    recording = si.NumpyRecording([traces.T], sampling_frequency=20000.0)
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as handle:
        handle["traces"] = traces
    from_si = load_spikedata_from_spikeinterface_recording(
        recording, filter=filter_option, chunk_samples=4096
    )
    from_h5 = load_spikedata_from_hdf5_raw_thresholded(
        path, "traces", fs_Hz=20000.0, filter=filter_option
    )
    assert from_si.N == 4  # one unit per channel, also without spikes
    assert all(np.array_equal(a, b) for a, b in zip(from_si.train, from_h5.train, strict=True))
    assert from_si.length == from_h5.length == 1500.0
    assert from_si.train[1].size >= 2 and from_si.train[0].size == 0


def test_recording_is_read_in_chunks(traces):
    recording = si.NumpyRecording([traces.T], sampling_frequency=20000.0)
    windows = []
    original = recording.get_traces

    def spy(**kwargs):
        windows.append((kwargs["start_frame"], kwargs["end_frame"]))
        return original(**kwargs)

    recording.get_traces = spy
    load_spikedata_from_spikeinterface_recording(recording, chunk_samples=5000)
    noise_windows, chunks = windows[:3], windows[3:]  # 1.5 s: three 0.5 s noise windows
    assert noise_windows == [(0, 10001), (9999, 20001), (19999, 30000)]  # +1 sample each side
    assert len(chunks) == 6
    assert max(stop - start for start, stop in chunks) <= 5000 + 2


class PlainRecording:
    def __init__(self, data, fs=1000.0):
        self.data, self.sampling_frequency = data, fs

    def get_traces(self, segment_index=0):
        return self.data

    def get_num_channels(self):
        return min(self.data.shape)


@pytest.mark.parametrize("layout", ["channels_first", "time_first"])
def test_duck_recording_layouts(layout):
    data = np.zeros((3, 40))
    data[0, 10] = 50.0
    data[2, 30] = -50.0
    sd = load_spikedata_from_spikeinterface_recording(
        PlainRecording(data if layout == "channels_first" else data.T), threshold_sigma=3.0
    )
    assert [t.tolist() for t in sd.train] == [[10.0], [], [30.0]]
    assert sd.length == 40.0


def test_square_traces_are_kept_as_channels_by_time():
    data = np.zeros((4, 4))
    data[1, 2] = 10.0
    sd = load_spikedata_from_spikeinterface_recording(PlainRecording(data), threshold_sigma=1.0)
    assert [t.tolist() for t in sd.train] == [[], [2.0], [], []]


def test_recording_errors():
    with pytest.raises(ValueError, match=r"must be 2-D \(channels x time\), got shape \(5,\)"):
        load_spikedata_from_spikeinterface_recording(PlainRecording(np.zeros(5)))
    with pytest.raises(TypeError, match="has no sampling frequency"):
        load_spikedata_from_spikeinterface_recording(PlainRecording(np.zeros((2, 5)), fs=None))


def test_read_phy_agrees_with_the_kilosort_loader(tmp_path):
    """SpikeInterface's own Phy reader, through this loader, gives the KiloSort loader's units."""
    import spikeinterface.extractors as se

    from spikelab.loaders import load_spikedata_from_kilosort

    np.save(tmp_path / "spike_times.npy", np.array([[96], [320], [32], [960], [640], [64]], "u8"))
    np.save(tmp_path / "spike_clusters.npy", np.array([0, 0, 2, 0, 5, 3], dtype=np.uint32))
    np.save(tmp_path / "channel_positions.npy", np.array([[0.0, 0.0], [0.0, 20.0], [16.0, 40.0]]))
    (tmp_path / "params.py").write_text(
        "dat_path = 'x.bin'\nn_channels_dat = 3\ndtype = 'int16'\noffset = 0\n"
        "sample_rate = 32000.0\nhp_filtered = False\n"
    )
    (tmp_path / "cluster_group.tsv").write_text(
        "cluster_id\tgroup\n0\tgood\n2\tmua\n3\tnoise\n5\tgood\n"
    )
    (tmp_path / "cluster_info.tsv").write_text(
        "cluster_id\tch\tdepth\tgroup\tlocation\n"
        "0\t1\t20\tgood\tCA1\n2\t2\t40\tmua\tCA1\n3\t0\t0\tnoise\tDG\n5\t0\t0\tgood\tDG\n"
    )
    via_si = load_spikedata_from_spikeinterface(
        se.read_phy(tmp_path, exclude_cluster_groups=["noise"])
    )
    direct = load_spikedata_from_kilosort(tmp_path, fs_Hz=32000.0)
    assert via_si.get_neuron_attribute("unit_id") == direct.metadata["cluster_ids"] == [0, 2, 5]
    assert [t.tolist() for t in via_si.train] == [t.tolist() for t in direct.train]
    assert [t.tolist() for t in direct.train] == [[3.0, 10.0, 30.0], [1.0], [20.0]]
    for key in ("electrode", "location_label", "depth"):
        assert via_si.get_neuron_attribute(key) == direct.get_neuron_attribute(key), key
    assert via_si.get_neuron_attribute("location_label") == ["CA1", "CA1", "DG"]
    assert "location" not in via_si.neuron_attributes[0]  # text never lands in location
