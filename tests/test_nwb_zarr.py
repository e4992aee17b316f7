"""Zarr-backed NWB (``*.nwb.zarr`` folders written by hdmf-zarr) loads like the HDF5 file."""

import sys

import pytest
from nwb_fixtures import add_shank, new_nwbfile, rich_nwbfile, write, write_zarr

from spikelab.exceptions import FileFormatError
from spikelab.loaders import load_spikedata_from_nwb


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("zarr")
    return write(rich_nwbfile(), root / "rich.nwb"), write_zarr(
        rich_nwbfile(), root / "rich.nwb.zarr"
    )


def test_zarr_folder_gives_the_same_spikedata_as_the_hdf5_file(pair):
    hdf5_path, zarr_path = pair
    from_hdf5 = load_spikedata_from_nwb(hdf5_path)
    from_zarr = load_spikedata_from_nwb(zarr_path)
    assert [t.tolist() for t in from_zarr.train] == [t.tolist() for t in from_hdf5.train]
    assert [t.tolist() for t in from_zarr.train] == [
        [250.0, 500.0, 1000.0],
        [],
        [2000.0, 2000.0, 3500.0],
    ]
    assert from_zarr.get_neuron_attribute("unit_id") == [11, 12, 13]
    assert from_zarr.neuron_attributes == from_hdf5.neuron_attributes
    assert (from_zarr.length, from_zarr.start_time) == (from_hdf5.length, from_hdf5.start_time)
    differing = {"source_file", "reader"}
    assert {k: v for k, v in from_zarr.metadata.items() if k not in differing} == {
        k: v for k, v in from_hdf5.metadata.items() if k not in differing
    }
    assert from_zarr.metadata["source_file"] == str(zarr_path)
    assert from_zarr.metadata["reader"] == "hdmf-zarr"
    assert from_zarr.metadata["subject_id"] == "mouse-7"


def test_zarr_without_hdmf_zarr_names_the_extra(pair, monkeypatch):
    monkeypatch.setitem(sys.modules, "hdmf_zarr", None)
    with pytest.raises(ImportError, match=r"pip install 'spikelab\[nwbzarr\]'"):
        load_spikedata_from_nwb(pair[1])


def test_a_folder_that_is_not_zarr_is_refused(tmp_path):
    (tmp_path / "session.nwb").mkdir()
    with pytest.raises(FileFormatError, match=r"session.nwb is a folder but not a Zarr store"):
        load_spikedata_from_nwb(tmp_path / "session.nwb")


def test_a_zarr_folder_that_is_not_nwb_names_it(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_dataset("x", data=[1, 2])
    with pytest.raises(FileFormatError, match=r"plain.zarr: hdmf-zarr could not read"):
        load_spikedata_from_nwb(tmp_path / "plain.zarr")


def test_pickled_references_are_never_decoded(tmp_path):
    """hdmf-zarr stores object references with the pickle codec: that column is left out."""
    nwbfile = new_nwbfile("z")
    group = add_shank(nwbfile, "shankA", "CA1", description="shank")
    nwbfile.add_unit(spike_times=[0.5], electrode_group=group)
    sd = load_spikedata_from_nwb(write_zarr(nwbfile, tmp_path / "refs.nwb.zarr"))
    assert sd.neuron_attributes == [{"unit_id": 0}]
    assert sd.train[0].tolist() == [500.0]


def test_zarr_column_declaring_more_than_it_stores_is_refused(tmp_path):
    import json

    path = write_zarr(rich_nwbfile(), tmp_path / "huge.nwb.zarr")
    array_file = path / "units" / "spike_times" / ".zarray"
    declared = json.loads(array_file.read_text())
    declared["shape"] = [10**11]
    array_file.write_text(json.dumps(declared))
    consolidated = json.loads((path / ".zmetadata").read_text())  # what hdmf-zarr reads
    consolidated["metadata"]["units/spike_times/.zarray"] = declared
    (path / ".zmetadata").write_text(json.dumps(consolidated))
    with pytest.raises(FileFormatError, match=r"huge.nwb.zarr: spike_times declares 100000000000"):
        load_spikedata_from_nwb(path)
