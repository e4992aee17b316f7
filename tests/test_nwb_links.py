"""A file is read only from itself: links out of an NWB file are refused before anything is read.

Each file is written with pynwb (as real ones are), then one link is added with h5py (or, for
Zarr, one metadata entry or chunk file is changed). Local files run through both readers; a
served file runs through the DANDI stand-in, streamed and downloaded.
"""

import contextlib
import json
import warnings

import h5py
import numpy as np
import pytest
from nwb_fixtures import (
    BOTH_PATHS,
    replace_dataset,
    rich_nwbfile,
    units_only_file,
    write_zarr,
)

from spikelab.exceptions import ExternalLinkError, FileFormatError, StreamingError
from spikelab.loaders import load_spikedata_from_dandi, load_spikedata_from_nwb
from spikelab.loaders.dandi._client import DandiClient
from spikelab.testing import DandiStandIn

TRAINS_MS = [[500.0, 1500.0], [2000.0]]  # what units_only_file holds
OUTSIDE_TIMES_S = [1.0, 2.0, 3.0]  # what the local file the links point to holds
OUTSIDE_SNR = [9.0, 8.0]


def outside_file(path):
    """A plain HDF5 file on the reading machine, holding values a link could pull in."""
    with h5py.File(path, "w") as handle:
        handle["snr"] = np.array(OUTSIDE_SNR)
        handle["times"] = np.array(OUTSIDE_TIMES_S)
        units = handle.create_group("units")
        units["spike_times"] = np.array(OUTSIDE_TIMES_S)
        units["spike_times_index"] = np.array([2, 3])
    return path


def linked(path, name, link, *, replace=True):
    """Put ``link`` at ``name`` of the NWB file at ``path`` (instead of what is there)."""
    with h5py.File(path, "r+") as handle:
        if replace:
            del handle[name]
        handle[name] = link
    return path


def nwb_with(tmp_path, name, make_link, *, replace=True):
    """Two units on one electrode, with one dataset or group replaced by a link."""
    outside = outside_file(tmp_path / "outside.h5")
    path = units_only_file(tmp_path / f"{name}.nwb", with_electrodes=True)
    return linked(path, name_of[name], make_link(outside), replace=replace), outside


name_of = {
    "snr": "units/snr",
    "spike_times": "units/spike_times",
    "units": "units",
    "dangling": "units/spike_times",
    "leaving": "units/spike_times",
}

CASES = {
    "snr": (
        lambda outside: h5py.ExternalLink(str(outside), "/snr"),
        False,
        r"snr\.nwb: units/snr is an HDF5 external link to .*outside\.h5:/snr; spikelab reads a "
        r"file only from itself .*allow_external_links=True",
    ),
    "spike_times": (
        lambda outside: h5py.ExternalLink(str(outside), "/times"),
        True,
        r"spike_times\.nwb: units/spike_times is an HDF5 external link to .*outside\.h5:/times",
    ),
    "units": (
        lambda outside: h5py.ExternalLink(str(outside), "/units"),
        True,
        r"units\.nwb: units is an HDF5 external link to .*outside\.h5:/units",
    ),
    "dangling": (
        lambda outside: h5py.SoftLink("/nowhere"),
        True,
        r"dangling\.nwb: units/spike_times is a soft link to /nowhere, which does not exist in "
        r"the file \(a dangling link\)",
    ),
    "leaving": (
        lambda outside: h5py.SoftLink("/general/hidden_times"),
        True,
        r"leaving\.nwb: units/spike_times is a soft link to /general/hidden_times, outside the "
        r"/units group",
    ),
}


@BOTH_PATHS
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("allow_no_units", [False, True])
def test_links_out_of_the_units_are_refused(tmp_path, case, prefer_pynwb, allow_no_units):
    make_link, replace, message = CASES[case]
    path, _ = nwb_with(tmp_path, case, make_link, replace=replace)
    if case == "leaving":
        with h5py.File(path, "r+") as handle:
            handle["general/hidden_times"] = np.array(OUTSIDE_TIMES_S)
    with pytest.raises(ExternalLinkError, match=message):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, allow_no_units=allow_no_units)


def test_the_error_is_a_value_error_naming_the_file(tmp_path):
    path, outside = nwb_with(tmp_path, "snr", CASES["snr"][0], replace=False)
    with pytest.raises(ValueError) as caught:
        load_spikedata_from_nwb(path)
    assert str(path) in str(caught.value) and str(outside) in str(caught.value)


@BOTH_PATHS
def test_an_external_link_anywhere_is_refused_before_pynwb_opens_the_file(tmp_path, prefer_pynwb):
    path = units_only_file(tmp_path / "elsewhere.nwb", with_electrodes=True)
    outside = outside_file(tmp_path / "outside.h5")
    linked(
        path, "general/devices/probe/linked", h5py.ExternalLink(str(outside), "/snr"), replace=False
    )
    linked(path, "general/subject", h5py.ExternalLink(str(outside), "/units"), replace=False)
    with pytest.raises(ExternalLinkError, match=r"elsewhere\.nwb: general/.* external link"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)


@BOTH_PATHS
def test_spike_times_stored_in_another_file_are_refused(tmp_path, prefer_pynwb):
    outside = tmp_path / "raw.bin"
    outside.write_bytes(np.array(OUTSIDE_TIMES_S).tobytes())
    path = replace_dataset(
        units_only_file(tmp_path / "stored.nwb"),
        "units/spike_times",
        shape=(3,),
        dtype="<f8",
        external=[(str(outside), 0, 24)],
    )
    with pytest.raises(ExternalLinkError, match=r"stored\.nwb: units/spike_times keeps its values"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)


@BOTH_PATHS
def test_two_dimensional_spike_times_are_refused_with_their_shape(tmp_path, prefer_pynwb):
    path = replace_dataset(
        units_only_file(tmp_path / "flat.nwb"),
        "units/spike_times",
        data=np.arange(30.0).reshape(10, 3),
    )
    with pytest.raises(FileFormatError, match=r"flat\.nwb: spike_times has shape \(10, 3\)"):
        load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)


def test_soft_links_inside_the_file_still_load(tmp_path):
    """pynwb links each electrode group to its device with a soft link: that one is fine."""
    path = units_only_file(tmp_path / "device.nwb", with_electrodes=True)
    with h5py.File(path, "r") as handle:
        device = handle.get("general/extracellular_ephys/shankA/device", getlink=True)
        assert isinstance(device, h5py.SoftLink)
    for prefer_pynwb in (True, False):
        sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
        assert [t.tolist() for t in sd.train] == TRAINS_MS


# --- the local opt-in ----------------------------------------------------------------------


@BOTH_PATHS
def test_the_local_opt_in_reads_the_linked_spike_times(tmp_path, prefer_pynwb):
    path, _ = nwb_with(tmp_path, "spike_times", CASES["spike_times"][0])
    # hdmf cannot open a dataset behind an external link by its token: pynwb's read falls
    # back to h5py, which follows the link
    falls_back = pytest.warns(UserWarning, match=r"pynwb could not read .*spike_times\.nwb")
    with falls_back if prefer_pynwb else contextlib.nullcontext():
        sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb, allow_external_links=True)
    assert [t.tolist() for t in sd.train] == [[1000.0, 2000.0], [3000.0]]


def test_the_local_opt_in_reads_the_linked_column(tmp_path):
    path, _ = nwb_with(tmp_path, "snr", CASES["snr"][0], replace=False)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=False, allow_external_links=True)
    assert sd.get_neuron_attribute("snr") == OUTSIDE_SNR
    assert [t.tolist() for t in sd.train] == TRAINS_MS


def test_the_opt_in_still_refuses_a_dangling_external_link(tmp_path):
    path, _ = nwb_with(tmp_path, "spike_times", lambda o: h5py.ExternalLink(str(o), "/gone"))
    with pytest.raises(ExternalLinkError, match=r"spike_times\.nwb: units/spike_times .*dangling"):
        load_spikedata_from_nwb(path, prefer_pynwb=False, allow_external_links=True)


# --- Zarr ----------------------------------------------------------------------------------


@pytest.fixture
def zarr_store(tmp_path):
    return write_zarr(rich_nwbfile(), tmp_path / "store" / "rich.nwb.zarr")


def test_a_zarr_chunk_symlinked_outside_the_store_is_refused(zarr_store, tmp_path):
    chunk = zarr_store / "units" / "spike_times" / "0"
    outside = tmp_path / "outside-chunk"
    outside.write_bytes(chunk.read_bytes())
    chunk.unlink()
    chunk.symlink_to(outside)
    with pytest.raises(
        ExternalLinkError,
        match=r"rich\.nwb\.zarr: units/spike_times/0 is a symlink to .*outside-chunk",
    ):
        load_spikedata_from_nwb(zarr_store)


def test_a_zarr_folder_symlinked_outside_the_store_is_refused(zarr_store, tmp_path):
    column = zarr_store / "units" / "snr"
    outside = tmp_path / "outside-snr"
    column.rename(outside)
    column.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ExternalLinkError, match=r"rich\.nwb\.zarr: units/snr is a symlink"):
        load_spikedata_from_nwb(zarr_store)


def test_a_symlink_inside_the_store_is_fine(zarr_store):
    chunk = zarr_store / "units" / "snr" / "0"
    kept = zarr_store / "units" / "snr" / "kept"
    chunk.rename(kept)
    chunk.symlink_to(kept)
    sd = load_spikedata_from_nwb(zarr_store)
    assert sd.get_neuron_attribute("snr") == [5.5, 1.0, 3.25]


def _rewrite_link_source(store, source):
    """Point electrode group shank0's device link at ``source`` (file and consolidated copy)."""
    attrs_file = store / "general" / "extracellular_ephys" / "shank0" / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["zarr_link"][0]["source"] = source
    attrs_file.write_text(json.dumps(attrs))
    consolidated = json.loads((store / ".zmetadata").read_text())
    consolidated["metadata"]["general/extracellular_ephys/shank0/.zattrs"] = attrs
    (store / ".zmetadata").write_text(json.dumps(consolidated))


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_a_zarr_link_to_another_store_is_refused(zarr_store, tmp_path, where):
    other = write_zarr(rich_nwbfile(), tmp_path / "other.nwb.zarr")
    source = "../../other.nwb.zarr" if where == "relative" else str(other)
    _rewrite_link_source(zarr_store, source)
    with pytest.raises(
        ExternalLinkError,
        match=r"rich\.nwb\.zarr: (\.zmetadata|general/extracellular_ephys/shank0/\.zattrs) has "
        r"a zarr_link "
        r"whose source .*other\.nwb\.zarr.* leads outside the store",
    ):
        load_spikedata_from_nwb(zarr_store)


def test_only_the_consolidated_metadata_may_say_it(zarr_store):
    consolidated = json.loads((zarr_store / ".zmetadata").read_text())
    key = "general/extracellular_ephys/shank0/.zattrs"
    consolidated["metadata"][key]["zarr_link"][0]["source"] = "/elsewhere.nwb.zarr"
    (zarr_store / ".zmetadata").write_text(json.dumps(consolidated))
    with pytest.raises(ExternalLinkError, match=r"rich\.nwb\.zarr: \.zmetadata has a zarr_link"):
        load_spikedata_from_nwb(zarr_store)


# --- a served file: streamed and downloaded ----------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("links-archive")
    outside = outside_file(root / "outside.h5")
    with DandiStandIn(root) as server:
        path = units_only_file(root / "linked.nwb", with_electrodes=True)
        linked(path, "units/snr", h5py.ExternalLink(str(outside), "/snr"), replace=False)
        server.linked = server.add_asset("000777", "sub-1/linked.nwb", path)
        server.linked_size = path.stat().st_size
        two_d = replace_dataset(
            units_only_file(root / "two_d.nwb"),
            "units/spike_times",
            data=np.arange(30.0).reshape(10, 3),
        )
        server.two_d = server.add_asset("000777", "sub-1/two_d.nwb", two_d)
        yield server


LINKED_MESSAGE = r"/blobs/.*: units/snr is an HDF5 external link to .*outside\.h5:/snr; .*remote"


def test_a_streamed_asset_with_an_external_link_is_refused_not_downloaded(archive):
    start = len(archive.requests)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to the download would warn first
        with pytest.raises(ExternalLinkError, match=LINKED_MESSAGE):
            load_spikedata_from_dandi(archive.linked, api_base=archive.api_base, stream=True)
    blob_gets = [r for r in archive.requests[start:] if r.server == "blob" and r.method == "GET"]
    assert blob_gets and all("Range" in r.headers for r in blob_gets)  # no whole-file GET


def test_a_url_is_refused_whatever_the_opt_in_says(archive):
    with DandiClient(archive.api_base) as client:
        blob = client.blob_url(archive.linked)
    with pytest.raises(ExternalLinkError, match=LINKED_MESSAGE):
        load_spikedata_from_nwb(blob, allow_external_links=True)


def test_a_downloaded_asset_with_an_external_link_is_refused(archive, tmp_path):
    with pytest.raises(ExternalLinkError, match=r"linked\.nwb: units/snr is an HDF5 external"):
        load_spikedata_from_dandi(archive.linked, api_base=archive.api_base, download_dir=tmp_path)


def test_streamed_two_dimensional_spike_times_are_refused(archive):
    with pytest.raises(StreamingError, match=r"/blobs/.*: spike_times has shape \(10, 3\)"):
        load_spikedata_from_dandi(
            archive.two_d, api_base=archive.api_base, stream=True, stream_only=True
        )


def test_documented_defaults_match_the_signature():
    import inspect
    import re

    documented = dict(
        re.findall(r"^\s*(\w+) : [^\n]*?, default: (.+)$", load_spikedata_from_nwb.__doc__, re.M)
    )
    parameters = inspect.signature(load_spikedata_from_nwb).parameters
    assert documented["allow_external_links"] == "False"
    for name, text in documented.items():
        assert repr(parameters[name].default) == text, name
