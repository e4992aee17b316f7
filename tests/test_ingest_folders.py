"""``ingest files`` takes folders: NWB files, .nwb.zarr stores and KiloSort folders inside."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from spikelab.cli import run
from spikelab.demo_data import write_hdf5, write_kilosort
from spikelab.flows import ingest_files, run_summary
from spikelab.flows.files import expand_inputs
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.delta_lake import assets_index
from spikelab.io.lake import Lake
from spikelab.io.manifest import read_manifest
from spikelab.lake_queries import summary_rows
from spikelab.spikedata import SpikeData


def nwb(path: Path, n_units: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = SpikeData([[1.0 + i, 5.0] for i in range(n_units)], length=10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no subject: not meant for DANDI
        return export_spikedata_to_nwb(sd, path)


@pytest.fixture(scope="module")
def mydata(tmp_path_factory):
    """mydata/{sub-01,sub-02}/a.nwb, a KiloSort folder, an HDF5 file, a Zarr store, noise."""
    root = tmp_path_factory.mktemp("folders") / "mydata"
    rng = np.random.default_rng(3)
    nwb(root / "sub-01" / "a.nwb", 2)
    nwb(root / "sub-02" / "a.nwb", 3)
    write_kilosort(root / "sub-02" / "sorted", rng)
    nwb(root / "sub-02" / "sorted" / "inside.nwb", 1)  # a KiloSort folder is not searched
    write_hdf5(root / "sub-01" / "spikes.h5", rng)
    (root / "notes.txt").write_text("not an input")
    (root / ".partial.nwb").write_bytes(b"being written")
    (root / "empty").mkdir()
    return root


def test_a_folder_gives_nwb_files_and_kilosort_folders_recursively(mydata):
    found = expand_inputs([str(mydata)])
    assert [p.relative_to(mydata).as_posix() for p in found] == [
        "sub-01/a.nwb",
        "sub-02/a.nwb",
        "sub-02/sorted",
    ]
    assert all(p.is_absolute() for p in found)


def test_a_zarr_nwb_store_is_one_input_not_searched(tmp_path):
    store = tmp_path / "data" / "session.nwb.zarr"
    (store / "units").mkdir(parents=True)
    (store / ".zgroup").write_text("{}")
    (store / "units" / "other.nwb").write_bytes(b"")
    assert expand_inputs([str(tmp_path / "data")]) == [store]


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("*.h5", ["sub-01/spikes.h5"]),
        ("sub-02/*", ["sub-02/a.nwb", "sub-02/sorted"]),
        ("*.nwb", ["sub-01/a.nwb", "sub-02/a.nwb"]),
    ],
)
def test_glob_chooses_what_folders_give(mydata, glob, expected):
    found = expand_inputs([str(mydata)], glob)
    assert [p.relative_to(mydata).as_posix() for p in found] == expected


def test_files_and_input_folders_given_are_kept_and_counted_once(mydata):
    h5 = mydata / "sub-01" / "spikes.h5"
    found = expand_inputs([str(h5), str(mydata / "sub-01"), str(mydata / "sub-02" / "sorted")])
    assert found == [h5, mydata / "sub-01" / "a.nwb", mydata / "sub-02" / "sorted"]


@pytest.mark.parametrize(
    ("glob", "message"),
    [(None, "holds no NWB file .* or KiloSort folder"), ("*.mat", "holds nothing matching")],
)
def test_a_folder_without_inputs_is_named(mydata, glob, message):
    with pytest.raises(ValueError, match=f"empty {message}.*--glob PATTERN"):
        expand_inputs([str(mydata / "empty")], glob)


@pytest.mark.usefixtures("prefect_harness")
def test_a_folder_lands_in_the_dataset_named(mydata, tmp_path):
    lake = str(tmp_path / "lake")
    state = ingest_files([str(mydata)], lake=lake, dataset="mine", return_state=True)
    summary = run_summary(state)
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert summary["parameters"]["dataset"] == "mine"
    keys = sorted(key for key in assets_index(lake))
    assert [k[:2] for k in keys] == [("files", "mine")] * 3
    names = [k[2] for k in keys]
    assert "a.nwb" in names and "sorted" in names
    (other,) = [n for n in names if n.startswith("a.nwb-")]  # the second a.nwb: a hash
    owners = {k[2]: read_manifest(Lake(lake).manifest_path(*k))["input"]["path"] for k in keys}
    assert owners["a.nwb"] == str(mydata / "sub-01" / "a.nwb")
    assert owners[other] == str(mydata / "sub-02" / "a.nwb")
    assert [row[:4] for row in summary_rows(lake)] == [("files", "mine", 3, 2 + 3 + 14)]
    again = run_summary(ingest_files([str(mydata)], lake=lake, dataset="mine", return_state=True))
    assert again["counts"] == {"ok": 0, "skipped": 3, "failed": 0}


@pytest.mark.usefixtures("prefect_harness")
def test_the_cli_takes_a_folder_glob_and_dataset(mydata, tmp_path, capfd):
    lake = str(tmp_path / "lake")
    argv = ["ingest", "files", str(mydata), "--glob", "*.h5", "--dataset", "h5s", "--lake", lake]
    assert run(argv) == 0
    assert "1 loaded, 0 skipped, 0 failed" in capfd.readouterr().out
    assert list(assets_index(lake)) == [("files", "h5s", "spikes.h5")]
    assert run(["ingest", "files", str(mydata / "empty"), "--lake", lake]) == 2
    assert "empty holds no NWB file" in capfd.readouterr().err
