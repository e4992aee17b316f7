import pickle

import numpy as np
import pytest
from scipy import sparse

import spikelab
from spikelab import spikedata
from spikelab.exceptions import InvalidSpikeDataError
from spikelab.spikedata import SpikeData


def make() -> SpikeData:
    return SpikeData(
        [[1.0, 3.5, 9.0], [], [2.0]],
        length=10.0,
        neuron_attributes=[{"unit_id": 7}, {"unit_id": 8}, {"unit_id": 9}],
        metadata={"source_file": "x.h5"},
    )


def test_constructor_basic_facts():
    sd = make()
    assert sd.N == len(sd) == 3
    assert sd.length == 10.0 and sd.start_time == 0.0
    assert all(t.dtype == np.float64 for t in sd.train)
    assert sd.train[0].tolist() == [1.0, 3.5, 9.0] and sd.train[1].size == 0
    assert sd.metadata == {"source_file": "x.h5"}
    assert spikelab.SpikeData is SpikeData


def test_trains_are_sorted_and_copied_to_float():
    sd = SpikeData([np.array([5, 1, 3], dtype=np.int32)])
    assert sd.train[0].tolist() == [1.0, 3.0, 5.0]
    assert sd.train[0].dtype == np.float64


def test_length_defaults_to_last_spike_minus_start():
    assert SpikeData([[1.0, 4.0], [6.5]]).length == 6.5
    assert SpikeData([[1.0, 4.0]], start_time=-2.0).length == 6.0
    assert SpikeData([[], []]).length == 0.0
    assert SpikeData([]).length == 0.0


def test_n_pads_with_empty_units():
    sd = SpikeData([[1.0]], N=3)
    assert sd.N == 3 and [t.size for t in sd.train] == [1, 0, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"train": [[1.0], [2.0]], "N": 1},
            r"N=1 is smaller than the number of spike trains given \(2\)",
        ),
        ({"train": [[1.0, np.nan]]}, "spike train 0 holds NaN or infinite"),
        ({"train": [[1.0], [np.inf]]}, "spike train 1 holds NaN or infinite"),
        ({"train": [[[1.0, 2.0]]]}, r"spike train 0 must be 1-D, got shape \(1, 2\)"),
        ({"train": [[1.0, 12.0]], "length": 10.0}, "a spike at 12.0 ms lies after the end"),
        ({"train": [[1.0]], "start_time": 2.0}, "a spike at 1.0 ms lies before start_time=2.0"),
        ({"train": [[1.0]], "length": -1.0}, "length must be >= 0"),
        ({"train": [[1.0]], "length": float("nan")}, "length must be finite"),
        ({"train": [[1.0]], "neuron_attributes": [{}, {}]}, "2 entries but there are N=1"),
        ({"train": [[1.0]], "neuron_attributes": {"a": 1}}, "one dict per unit"),
        ({"train": [[1.0]], "neuron_attributes": [3]}, r"neuron_attributes\[0\] must be a dict"),
        (
            {"train": [[1.0]], "raw_data": np.zeros((2, 5)), "raw_time": np.arange(4)},
            "raw_time has 4 samples but raw_data has shape",
        ),
    ],
)
def test_validation_messages(kwargs, match):
    kwargs = dict(kwargs)
    train = kwargs.pop("train")
    with pytest.raises(InvalidSpikeDataError, match=match):
        SpikeData(train, **kwargs)


def test_validation_errors_are_value_errors():
    with pytest.raises(ValueError):
        SpikeData([[np.nan]])


def test_spike_exactly_at_end_and_start_are_allowed():
    sd = SpikeData([[-5.0, 5.0]], start_time=-5.0, length=10.0)
    assert sd.train[0].tolist() == [-5.0, 5.0]


def test_from_idces_times_groups_by_unit():
    sd = SpikeData.from_idces_times([2, 0, 2, 0], [4.0, 1.0, 3.0, 2.0], length=5.0)
    assert sd.N == 3
    assert [t.tolist() for t in sd.train] == [[1.0, 2.0], [], [3.0, 4.0]]
    assert sd.length == 5.0


def test_from_idces_times_with_n_and_errors():
    assert SpikeData.from_idces_times([0], [1.0], N=4).N == 4
    with pytest.raises(InvalidSpikeDataError, match="same length, got 2 and 1"):
        SpikeData.from_idces_times([0, 1], [1.0])
    with pytest.raises(InvalidSpikeDataError, match="non-negative, found -1"):
        SpikeData.from_idces_times([-1], [1.0])
    with pytest.raises(InvalidSpikeDataError, match="idces reach unit 3 but N=2"):
        SpikeData.from_idces_times([3], [1.0], N=2)
    with pytest.raises(InvalidSpikeDataError, match="whole numbers"):
        SpikeData.from_idces_times([0.5], [1.0])


def test_idces_times_is_time_sorted():
    idces, times = make().idces_times()
    assert idces.tolist() == [0, 2, 0, 0]
    assert times.tolist() == [1.0, 2.0, 3.5, 9.0]


def test_raster_counts_per_bin():
    sd = make()
    raster = sd.raster(2.5)
    assert raster.shape == (3, 4)
    assert raster.tolist() == [[1, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0]]
    dense_from_sparse = sd.sparse_raster(2.5)
    assert sparse.issparse(dense_from_sparse)
    assert np.array_equal(dense_from_sparse.toarray(), raster)


def test_raster_spike_at_the_end_goes_in_the_last_bin():
    sd = SpikeData([[0.0, 10.0]], length=10.0)
    assert sd.raster(1.0).tolist() == [[1, 0, 0, 0, 0, 0, 0, 0, 0, 1]]


def test_raster_respects_start_time():
    sd = SpikeData([[-4.0, -0.5]], start_time=-4.0, length=4.0)
    assert sd.raster(1.0).tolist() == [[1, 0, 0, 1]]


@pytest.mark.parametrize("bin_size", [0.1, 1.0, 3.0])
def test_from_raster_round_trip(bin_size):
    counts = np.array([[0, 3, 1, 0, 2], [1, 0, 0, 0, 7], [0, 0, 0, 0, 0]])
    sd = SpikeData.from_raster(counts, bin_size)
    assert sd.length == pytest.approx(5 * bin_size)
    assert np.array_equal(sd.raster(bin_size), counts)
    assert [t.size for t in sd.train] == [6, 8, 0]
    # every spike lies strictly inside its bin
    assert np.all((sd.train[1][:1] > 0) & (sd.train[1][:1] < bin_size))


def test_from_raster_empty_and_errors():
    sd = SpikeData.from_raster(np.zeros((0, 4)), 2.0)
    assert sd.N == 0 and sd.length == 8.0
    with pytest.raises(InvalidSpikeDataError, match="must be 2-D"):
        SpikeData.from_raster(np.zeros(4), 1.0)
    with pytest.raises(InvalidSpikeDataError, match="bin_size_ms must be positive"):
        SpikeData.from_raster(np.zeros((1, 4)), 0.0)
    with pytest.raises(InvalidSpikeDataError, match="negative values"):
        SpikeData.from_raster(np.array([[1, -1]]), 1.0)
    with pytest.raises(InvalidSpikeDataError, match="fractions"):
        SpikeData.from_raster(np.array([[0.5]]), 1.0)


def test_rates():
    sd = make()
    np.testing.assert_allclose(sd.rates("Hz"), [300.0, 0.0, 100.0])
    np.testing.assert_allclose(sd.rates(), [0.3, 0.0, 0.1])
    assert np.isnan(SpikeData([[], []]).rates("Hz")).all()
    with pytest.raises(ValueError, match="unknown rate unit 'mHz'"):
        sd.rates("mHz")


def test_subset_by_index_and_attribute():
    sd = make()
    picked = sd.subset([2, 0])
    assert [t.tolist() for t in picked.train] == [[2.0], [1.0, 3.5, 9.0]]
    assert picked.get_neuron_attribute("unit_id") == [9, 7]
    assert picked.length == 10.0 and picked.metadata == sd.metadata
    by_id = sd.subset([8], by="unit_id")
    assert by_id.N == 1 and by_id.neuron_attributes == [{"unit_id": 8}]
    with pytest.raises(ValueError, match=r"out of range for N=3"):
        sd.subset([3])
    with pytest.raises(ValueError, match=r"no unit has unit_id in \[42\]"):
        sd.subset([42], by="unit_id")


def test_subtime_keeps_absolute_times():
    sd = make()
    window = sd.subtime(2.0, 9.0)
    assert [t.tolist() for t in window.train] == [[3.5], [], [2.0]]
    assert window.start_time == 2.0 and window.length == 7.0
    assert sd.subtime(None, None) == sd
    with pytest.raises(ValueError, match="before start"):
        sd.subtime(5.0, 1.0)


def test_subtime_slices_raw_data():
    raw = np.arange(20.0).reshape(2, 10)
    sd = SpikeData([[1.0]], length=10.0, raw_data=raw, raw_time=np.arange(10.0))
    window = sd.subtime(3.0, 6.0)
    assert window.raw_time.tolist() == [3.0, 4.0, 5.0]
    assert window.raw_data.tolist() == [[3.0, 4.0, 5.0], [13.0, 14.0, 15.0]]


def test_neuron_attributes_get_and_set():
    sd = SpikeData([[1.0], [2.0]])
    assert sd.neuron_attributes is None
    assert sd.get_neuron_attribute("unit_id", default=-1) == [-1, -1]
    sd.set_neuron_attribute("unit_id", ["a", "b"])
    assert sd.neuron_attributes == [{"unit_id": "a"}, {"unit_id": "b"}]
    assert sd.get_neuron_attribute("missing") == [None, None]
    with pytest.raises(ValueError, match=r"needs 2 values, got 1"):
        sd.set_neuron_attribute("unit_id", ["a"])


def test_equality_and_repr():
    assert make() == make()
    other = make()
    other.metadata["extra"] = np.arange(3)
    assert other != make()
    shifted = SpikeData([[1.0, 3.5, 9.5], [], [2.0]], length=10.0)
    assert shifted != SpikeData([[1.0, 3.5, 9.0], [], [2.0]], length=10.0)
    assert repr(make()) == "SpikeData(N=3, spikes=4, length=10 ms, start_time=0 ms)"
    assert make() != "not spike data"


def test_pickles():
    sd = make()
    assert pickle.loads(pickle.dumps(sd)) == sd


def test_from_flat_sorts_only_within_units():
    sd = SpikeData.from_flat(
        np.array([3.0, 1.0, 2.0, 0.0, 9.0, 8.0, 1.0, 2.0]), [3, 4, 4, 6, 8], length=10.0
    )
    assert [t.tolist() for t in sd.train] == [[1.0, 2.0, 3.0], [0.0], [], [8.0, 9.0], [1.0, 2.0]]
    assert sd.length == 10.0


@pytest.mark.parametrize("block", [2, 3, 1 << 17])
def test_from_flat_checks_across_blocks_and_scales(monkeypatch, block):
    monkeypatch.setattr(spikedata, "_CHECK_BLOCK", block)
    times = np.array([0.003, 0.001, 0.002, 0.0, 0.009, 0.008, 0.001, 0.002])
    sd = SpikeData.from_flat(times, [3, 4, 4, 6, 8], length=10.0, scale=1000.0)
    assert [t.tolist() for t in sd.train] == [[1.0, 2.0, 3.0], [0.0], [], [8.0, 9.0], [1.0, 2.0]]
    assert sd.train[0].base is times  # scaled and sorted in place, not copied
    for bad in (np.inf, np.nan):
        with pytest.raises(InvalidSpikeDataError, match="NaN or infinite"):
            SpikeData.from_flat([1.0, 2.0, 3.0, 4.0, bad], [5], scale=1000.0)
    with pytest.raises(InvalidSpikeDataError, match="NaN or infinite"):
        SpikeData.from_flat([np.nan], [1])


def test_from_flat_selects_units_in_order():
    sd = SpikeData.from_flat([1.0, 2.0, 5.0], [2, 2, 3], units=[2, 0])
    assert [t.tolist() for t in sd.train] == [[5.0], [1.0, 2.0]]


@pytest.mark.parametrize(
    ("times", "ends", "match"),
    [
        ([1.0, 2.0], [2, 1], "non-decreasing"),
        ([1.0, 2.0], [1], r"must finish at the number of spike times \(2\)"),
        ([1.0, np.nan], [2], "NaN or infinite"),
    ],
)
def test_from_flat_errors(times, ends, match):
    with pytest.raises(InvalidSpikeDataError, match=match):
        SpikeData.from_flat(times, ends)


def test_from_flat_runs_the_same_checks_as_the_constructor():
    with pytest.raises(InvalidSpikeDataError, match="lies after the end"):
        SpikeData.from_flat([1.0, 20.0], [2], length=10.0)
    assert SpikeData.from_flat([], []) == SpikeData([])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_unsigned_unit_indices(dtype):
    idces = np.array([2, 0, 2, 1], dtype=dtype)
    sd = SpikeData.from_idces_times(idces, [4.0, 1.0, 3.0, 2.0], N=4)
    assert [t.tolist() for t in sd.train] == [[1.0], [2.0], [3.0, 4.0], []]
    grouped, ends = spikedata.group_by_unit(idces, np.array([4.0, 1.0, 3.0, 2.0]), 3)
    assert (grouped.tolist(), ends.tolist(), ends.dtype) == (
        [1.0, 2.0, 4.0, 3.0],
        [1, 2, 4],
        np.dtype(np.int64),
    )
    assert sd.subset([np.uint32(2), np.uint64(0)]).train[0].tolist() == [3.0, 4.0]
