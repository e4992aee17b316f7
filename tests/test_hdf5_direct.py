"""Whole float64 columns read straight from a local HDF5 file's bytes, or through h5py."""

import io

import h5py
import numpy as np
import pytest

from spikelab.loaders.nwb._hdf5_direct import _stored_pieces, read_float64, stored_size

VALUES = np.cumsum(np.random.default_rng(5).uniform(0.0, 0.01, 1003))


@pytest.mark.parametrize(
    ("options", "direct"),
    [
        ({}, True),  # contiguous
        ({"chunks": (100,)}, True),  # the last chunk only partly used
        ({"chunks": (1003,)}, True),
        ({"chunks": (100,), "compression": "gzip"}, False),
        ({"chunks": (100,), "shuffle": True}, False),
        ({"dtype": ">f8"}, False),
        ({"dtype": "<f4"}, False),
    ],
)
def test_same_values_as_h5py(tmp_path, options, direct):
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        handle.create_dataset("times", data=VALUES.astype(options.pop("dtype", "<f8")), **options)
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        dataset = handle["times"]
        assert (_stored_pieces(dataset) is not None) == direct
        values = read_float64(dataset)
        assert values.dtype == np.float64
        np.testing.assert_array_equal(values, np.asarray(dataset[()], dtype=np.float64))


def test_unwritten_chunks_read_as_the_fill_value(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        dataset = handle.create_dataset(
            "times", shape=(10,), dtype="<f8", chunks=(4,), fillvalue=7.0
        )
        dataset[:4] = np.arange(4.0)
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        assert _stored_pieces(handle["times"]) is None
        assert read_float64(handle["times"]).tolist() == [0.0, 1.0, 2.0, 3.0] + [7.0] * 6


@pytest.mark.parametrize("chunks", [None, (100,)])
def test_offsets_count_from_the_start_of_a_file_with_a_user_block(tmp_path, chunks):
    with h5py.File(tmp_path / "f.h5", "w", userblock_size=512) as handle:
        handle.create_dataset("times", data=VALUES, chunks=chunks)
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        assert _stored_pieces(handle["times"]) is not None
        np.testing.assert_array_equal(read_float64(handle["times"]), VALUES)


def test_files_not_on_disk_go_through_h5py(tmp_path):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("times", data=VALUES)
    with h5py.File(buffer, "r") as handle:
        assert _stored_pieces(handle["times"]) is None
        np.testing.assert_array_equal(read_float64(handle["times"]), VALUES)


def test_a_file_cut_short_is_an_error(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("times", data=VALUES)
    with h5py.File(path, "r") as handle:
        dataset = handle["times"]
        end = dataset.id.get_offset() + dataset.id.get_storage_size()
        with open(path, "r+b") as raw:  # cut inside the data, after h5py read the metadata
            raw.truncate(end - 100)
        with pytest.raises(OSError, match=r"f\.h5: /times ends early"):
            read_float64(dataset)


def test_stored_size_counts_what_the_file_holds(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        handle.create_dataset("plain", data=VALUES)
        handle.create_dataset("unwritten", shape=(10**11,), dtype="<f8", chunks=(4096,))
        handle.create_dataset(
            "packed", data=np.zeros(100_000), chunks=(10_000,), compression="gzip"
        )
        handle.create_dataset("outside", shape=(100,), dtype="<f8", external=[("raw.bin", 0, 800)])
    with h5py.File(tmp_path / "f.h5", "r") as handle:
        assert stored_size(handle["plain"]) == (VALUES.nbytes, False)
        assert stored_size(handle["unwritten"]) == (0, False)
        stored, packed = stored_size(handle["packed"])
        assert packed and 0 < stored < 100_000 * 8 / 50  # zeros pack tightly
        assert stored_size(handle["outside"]) is None  # the HDF5 file cannot tell
