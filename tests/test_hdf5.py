import h5py
import numpy as np
import pytest

from spikelab.loaders import load_spikedata_from_hdf5
from spikelab.spikedata import SpikeData

TRAINS_S = [[0.001, 0.0105, 0.2], [], [0.05, 0.3]]
TRAINS_MS = [[1.0, 10.5, 200.0], [], [50.0, 300.0]]


def write(path, datasets, attrs=None):
    with h5py.File(path, "w") as handle:
        for name, value in datasets.items():
            handle.create_dataset(name, data=value)
        handle.attrs.update(attrs or {})
    return path


def ragged(tmp_path, scale=1.0, attrs=None):
    flat = np.concatenate([np.asarray(t) * scale for t in TRAINS_S])
    ends = np.cumsum([len(t) for t in TRAINS_S])
    return write(tmp_path / "ragged.h5", {"units/times": flat, "units/index": ends}, attrs)


def trains(sd):
    return [t.tolist() for t in sd.train]


def test_ragged_seconds(tmp_path):
    path = ragged(tmp_path)
    sd = load_spikedata_from_hdf5(
        path,
        spike_times_dataset="units/times",
        spike_times_index_dataset="units/index",
        metadata={"lab": "x"},
    )
    assert isinstance(sd, SpikeData)
    np.testing.assert_allclose(np.concatenate(sd.train), np.concatenate(TRAINS_MS), atol=1e-9)
    assert [t.size for t in sd.train] == [3, 0, 2]
    assert sd.length == pytest.approx(300.0)
    assert sd.start_time == 0.0
    assert sd.metadata == {
        "lab": "x",
        "source_file": str(path),
        "format": "hdf5",
        "hdf5_style": "ragged",
    }


@pytest.mark.parametrize(
    ("unit", "scale", "fs"), [("ms", 1000.0, None), ("samples", 20000.0, 20000.0)]
)
def test_ragged_other_units(tmp_path, unit, scale, fs):
    path = ragged(tmp_path, scale=scale)
    sd = load_spikedata_from_hdf5(
        path,
        spike_times_dataset="units/times",
        spike_times_index_dataset="units/index",
        spike_times_unit=unit,
        fs_Hz=fs,
    )
    np.testing.assert_allclose(np.concatenate(sd.train), np.concatenate(TRAINS_MS), atol=1e-9)


def test_length_ladder(tmp_path):
    kwargs = {"spike_times_dataset": "units/times", "spike_times_index_dataset": "units/index"}
    from_file = ragged(tmp_path, attrs={"length_ms": 1000.0, "start_time": -5.0})
    sd = load_spikedata_from_hdf5(from_file, **kwargs)
    assert (sd.length, sd.start_time) == (1000.0, -5.0)
    assert load_spikedata_from_hdf5(from_file, length_ms=400.0, **kwargs).length == 400.0
    with pytest.raises(ValueError, match=r"ragged.h5: a spike at 300.0 ms lies after the end"):
        load_spikedata_from_hdf5(from_file, length_ms=100.0, **kwargs)


def test_spike_before_start_time_is_an_error(tmp_path):
    path = ragged(tmp_path, attrs={"start_time": 20.0})
    with pytest.raises(ValueError, match="a spike at 1.0 ms lies before start_time=20.0"):
        load_spikedata_from_hdf5(
            path, spike_times_dataset="units/times", spike_times_index_dataset="units/index"
        )


def test_no_spikes_gives_length_zero(tmp_path):
    path = write(tmp_path / "e.h5", {"t": np.zeros(0), "i": np.array([0, 0])})
    sd = load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")
    assert sd.N == 2 and sd.length == 0.0 and all(t.size == 0 for t in sd.train)


def test_ragged_zero_length_index_gives_no_units(tmp_path):
    path = write(tmp_path / "e.h5", {"t": np.zeros(0), "i": np.zeros(0, dtype=int)})
    sd = load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")
    assert sd.N == 0 and sd.length == 0.0


@pytest.mark.parametrize(
    ("index", "match"),
    [
        ([2, 1, 3], "non-decreasing cumulative end offsets"),
        ([1, 5], r"index 'i' ends at 5 but 't' holds only 3 spike times"),
        ([-1, 3], "non-decreasing"),
    ],
)
def test_ragged_bad_index(tmp_path, index, match):
    path = write(tmp_path / "bad.h5", {"t": np.array([0.1, 0.2, 0.3]), "i": np.array(index)})
    with pytest.raises(ValueError, match=match):
        load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")


def test_ragged_index_short_of_the_times_warns(tmp_path):
    path = write(tmp_path / "short.h5", {"t": np.array([0.1, 0.2, 0.3]), "i": np.array([1, 2])})
    with pytest.warns(UserWarning, match="covers 2 of 3 spike times"):
        sd = load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")
    assert trains(sd) == [[100.0], [200.0]]


def test_raster_round_trip_and_length(tmp_path):
    counts = np.array([[0, 2, 0, 1], [3, 0, 0, 0]])
    path = write(tmp_path / "r.h5", {"raster": counts}, {"length_ms": 99.0})
    sd = load_spikedata_from_hdf5(
        path, raster_dataset="raster", raster_bin_size_ms=5.0, length_ms=1000.0
    )
    assert sd.length == 20.0  # T x bin, whatever else is given
    assert np.array_equal(sd.raster(5.0), counts)
    assert sd.metadata["hdf5_style"] == "raster"


@pytest.mark.parametrize(
    ("data", "bin_size", "match"),
    [
        (np.zeros(3), 1.0, "must be 2-D"),
        (np.array([[1, -2]]), 1.0, "negative values"),
        (np.array([[1, 2]]), 0.0, "bin_size_ms must be positive"),
        (np.array([[1, 2]]), -1.0, "bin_size_ms must be positive"),
    ],
)
def test_raster_errors(tmp_path, data, bin_size, match):
    path = write(tmp_path / "r.h5", {"raster": data})
    with pytest.raises(ValueError, match=match):
        load_spikedata_from_hdf5(path, raster_dataset="raster", raster_bin_size_ms=bin_size)


def test_raster_without_units(tmp_path):
    path = write(tmp_path / "r.h5", {"raster": np.zeros((0, 6))})
    sd = load_spikedata_from_hdf5(path, raster_dataset="raster", raster_bin_size_ms=2.0)
    assert sd.N == 0 and sd.length == 12.0


def test_group_per_unit_natural_order(tmp_path):
    datasets = {
        "spikes/unit_10": np.array([0.3]),
        "spikes/unit_2": np.array([0.2, 0.1]),
        "spikes/unit_1": np.array([], dtype=float),
    }
    path = write(tmp_path / "g.h5", datasets)
    sd = load_spikedata_from_hdf5(path, group_per_unit="spikes")
    assert sd.get_neuron_attribute("unit_id") == ["unit_1", "unit_2", "unit_10"]
    assert trains(sd) == [[], [100.0, 200.0], [300.0]]


def test_group_per_unit_numeric_names_and_samples(tmp_path):
    path = write(tmp_path / "g.h5", {"g/10": [300], "g/2": [200], "g/1": [100]})
    sd = load_spikedata_from_hdf5(path, group_per_unit="g", group_time_unit="samples", fs_Hz=1000)
    assert sd.get_neuron_attribute("unit_id") == ["1", "2", "10"]
    assert trains(sd) == [[100.0], [200.0], [300.0]]


def test_paired_arrays(tmp_path):
    path = write(tmp_path / "p.h5", {"i": np.array([1, 0, 1]), "t": np.array([3.0, 1.0, 2.0])})
    sd = load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t", times_unit="ms")
    assert trains(sd) == [[1.0], [2.0, 3.0]]


def test_paired_pads_missing_units_with_a_warning(tmp_path):
    path = write(tmp_path / "p.h5", {"i": np.array([3, 0]), "t": np.array([0.002, 0.001])})
    with pytest.warns(UserWarning, match="2 unit indices below 4 have no spikes; padded"):
        sd = load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t")
    assert trains(sd) == [[1.0], [], [], [2.0]]


@pytest.mark.parametrize(
    ("idces", "times", "match"),
    [
        ([0, -1], [1.0, 2.0], "negative unit index"),
        ([0, 1, 1], [1.0, 2.0], r"'i' has 3 entries but 't' has 2"),
        ([0.5], [1.0], "whole unit indices"),
    ],
)
def test_paired_errors(tmp_path, idces, times, match):
    path = write(tmp_path / "p.h5", {"i": np.array(idces), "t": np.array(times)})
    with pytest.raises(ValueError, match=match):
        load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t")


def test_raw_data_and_time(tmp_path):
    raw = np.arange(12, dtype=np.int16).reshape(2, 6)
    path = write(
        tmp_path / "raw.h5",
        {"i": np.array([0]), "t": np.array([0.001]), "raw": raw, "raw_t": np.arange(6) / 1000},
    )
    sd = load_spikedata_from_hdf5(
        path, idces_dataset="i", times_dataset="t", raw_dataset="raw", raw_time_dataset="raw_t"
    )
    assert np.array_equal(sd.raw_data, raw)
    np.testing.assert_allclose(sd.raw_time, [0, 1, 2, 3, 4, 5])
    from_fs = load_spikedata_from_hdf5(
        path, idces_dataset="i", times_dataset="t", raw_dataset="raw", fs_Hz=2000.0
    )
    np.testing.assert_allclose(from_fs.raw_time, [0, 0.5, 1, 1.5, 2, 2.5])
    with pytest.raises(ValueError, match="needs raw_time_dataset or fs_Hz"):
        load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t", raw_dataset="raw")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one HDF5 style.*styles given: none"),
        (
            {"raster_dataset": "r", "raster_bin_size_ms": 1.0, "idces_dataset": "i"},
            "styles given: raster, paired",
        ),
        ({"raster_dataset": "r"}, "needs raster_bin_size_ms"),
        ({"spike_times_dataset": "t"}, "needs spike_times_index_dataset"),
        ({"idces_dataset": "i"}, "needs times_dataset"),
        ({"group_per_unit": "g", "group_time_unit": "samples"}, "fs_Hz is required"),
        ({"idces_dataset": "i", "times_dataset": "t", "times_unit": "min"}, "unknown time unit"),
    ],
)
def test_argument_errors_come_before_reading(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_spikedata_from_hdf5(tmp_path / "does-not-exist.h5", **kwargs)


def test_missing_dataset_is_a_key_error(tmp_path):
    path = write(tmp_path / "p.h5", {"i": np.array([0])})
    with pytest.raises(KeyError, match=r"dataset 't' is not in .*p.h5"):
        load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t")
    with pytest.raises(KeyError, match=r"group 'nope' is not in"):
        load_spikedata_from_hdf5(path, group_per_unit="nope")


def test_missing_and_non_hdf5_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_spikedata_from_hdf5(tmp_path / "missing.h5", group_per_unit="g")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5")
    with pytest.raises(ValueError, match=r"junk.h5 is not a readable HDF5 file"):
        load_spikedata_from_hdf5(junk, group_per_unit="g")


# ---------------------------------------------------------------- edge inputs


def test_raster_fractional_counts_truncated_toward_zero_with_a_warning(tmp_path):
    counts = np.array([[0.7, 2.5, 0.0, 1.0], [3.0, 0.2, 0.0, 1.999]])
    path = write(tmp_path / "r.h5", {"data/raster": counts})
    with pytest.warns(UserWarning, match=r"raster dataset 'data/raster' holds 4 non-integer"):
        sd = load_spikedata_from_hdf5(path, raster_dataset="data/raster", raster_bin_size_ms=5.0)
    assert np.array_equal(sd.raster(5.0), [[0, 2, 0, 1], [3, 0, 0, 1]])
    assert sd.length == 20.0


def test_raster_whole_float_counts_do_not_warn(tmp_path):
    path = write(tmp_path / "r.h5", {"raster": np.array([[1.0, 0.0, 2.0]])})
    sd = load_spikedata_from_hdf5(path, raster_dataset="raster", raster_bin_size_ms=1.0)
    assert np.array_equal(sd.raster(1.0), [[1, 0, 2]])


@pytest.mark.parametrize(
    ("counts", "match"),
    [(np.array([[np.nan, 1.0]]), "NaN or infinite"), (np.array([[-0.5, 1.0]]), "negative")],
)
def test_raster_float_counts_that_cannot_be_truncated(tmp_path, counts, match):
    path = write(tmp_path / "r.h5", {"raster": counts})
    with pytest.raises(ValueError, match=rf"r\.h5: dataset 'raster'.*{match}"):
        load_spikedata_from_hdf5(path, raster_dataset="raster", raster_bin_size_ms=1.0)


TEXT = np.array([b"0.1", b"0.2"])


@pytest.mark.parametrize(
    ("datasets", "kwargs", "bad"),
    [
        (
            {"raster": np.array([[b"1", b"2"]])},
            {"raster_dataset": "raster", "raster_bin_size_ms": 1.0},
            "raster",
        ),
        (
            {"t": TEXT, "i": np.array([2])},
            {"spike_times_dataset": "t", "spike_times_index_dataset": "i"},
            "t",
        ),
        (
            {"t": np.array([0.1, 0.2]), "i": np.array(["2"], dtype=h5py.string_dtype())},
            {"spike_times_dataset": "t", "spike_times_index_dataset": "i"},
            "i",
        ),
        ({"g/u1": TEXT}, {"group_per_unit": "g"}, "g/u1"),
        ({"i": TEXT, "t": np.array([0.1, 0.2])}, {"idces_dataset": "i", "times_dataset": "t"}, "i"),
        ({"i": np.array([0, 1]), "t": TEXT}, {"idces_dataset": "i", "times_dataset": "t"}, "t"),
    ],
)
def test_text_where_numbers_belong_names_file_and_dataset(tmp_path, datasets, kwargs, bad):
    path = write(tmp_path / "text.h5", datasets)
    with pytest.raises(ValueError, match=rf"text\.h5: dataset '/{bad}' holds text \(dtype"):
        load_spikedata_from_hdf5(path, **kwargs)


def test_text_raw_dataset_names_it(tmp_path):
    path = write(tmp_path / "raw.h5", {"t": np.array([0.1]), "i": [1], "raw": TEXT})
    with pytest.raises(ValueError, match=r"raw\.h5: dataset '/raw' holds text"):
        load_spikedata_from_hdf5(
            path,
            spike_times_dataset="t",
            spike_times_index_dataset="i",
            raw_dataset="raw",
            fs_Hz=1e3,
        )


def test_text_length_attribute_names_the_file(tmp_path):
    path = ragged(tmp_path, attrs={"length_ms": "long"})
    with pytest.raises(
        ValueError, match=r"ragged\.h5: root attribute 'length_ms' must be one number"
    ):
        load_spikedata_from_hdf5(
            path, spike_times_dataset="units/times", spike_times_index_dataset="units/index"
        )


def test_fractional_ragged_index_is_refused(tmp_path):
    path = write(tmp_path / "f.h5", {"t": np.array([0.1, 0.2, 0.3]), "i": np.array([1.5, 3.0])})
    with pytest.raises(ValueError, match=r"f\.h5: dataset 'i' must hold whole numbers"):
        load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_unsigned_paired_indices_and_ragged_index(tmp_path, dtype):
    datasets = {
        "i": np.array([2, 0, 2], dtype=dtype),
        "t": np.array([3.0, 1.0, 2.0]),
        "ends": np.array([1, 1, 3], dtype=dtype),
    }
    path = write(tmp_path / "u.h5", datasets)
    with pytest.warns(UserWarning, match="1 unit indices below 3 have no spikes"):
        sd = load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t", times_unit="ms")
    assert trains(sd) == [[1.0], [], [2.0, 3.0]]
    sd = load_spikedata_from_hdf5(
        path, spike_times_dataset="t", spike_times_index_dataset="ends", spike_times_unit="ms"
    )
    assert trains(sd) == [[3.0], [], [1.0, 2.0]]


def test_unsigned_minus_one_in_paired_indices_is_refused_before_allocating(tmp_path):
    idces = np.array([0, 1, 2**32 - 1], dtype=np.uint32)  # a -1 written as uint32
    path = write(tmp_path / "u.h5", {"i": idces, "t": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(ValueError, match=r"reaches unit index 4294967295 .* stored as an unsigned"):
        load_spikedata_from_hdf5(path, idces_dataset="i", times_dataset="t")


def test_dataset_declaring_far_more_than_it_stores_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("t", shape=(10**11,), dtype="f8", chunks=(1024,))  # 745 GiB
        handle["i"] = np.array([10**11])
    assert path.stat().st_size < 100_000
    with pytest.raises(
        ValueError, match=r"huge\.h5: dataset '/t' declares 100000000000 values \(745\.1 GiB\)"
    ):
        load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")


def test_checked_dataset_that_is_really_stored_is_read(tmp_path, monkeypatch):
    from spikelab.loaders import _common

    monkeypatch.setattr(_common, "_DECLARED_BYTES_WITHOUT_CHECK", 1024)  # check this file
    times = np.linspace(0.0, 100.0, 10_000)
    path = tmp_path / "gz.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("t", data=times, compression="gzip", chunks=(1000,))
        handle["i"] = np.array([times.size])
    sd = load_spikedata_from_hdf5(path, spike_times_dataset="t", spike_times_index_dataset="i")
    assert sd.train[0].size == times.size and sd.train[0][-1] == 100_000.0
