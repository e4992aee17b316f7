"""``spikelab lake remove``: assets and datasets leave the lake, time travel still reaches them."""

import time
from pathlib import Path

import pytest

from spikelab.cli import run
from spikelab.io.delta_lake import Publication, assets_index, publish
from spikelab.io.lake import Lake, connect
from spikelab.io.lake_remove import remove_assets
from spikelab.io.storage import put_bytes
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import summary_rows
from spikelab.spikedata import SpikeData


def entry(source, dataset, asset, trains):
    attributes = [{"unit_id": i} for i in range(len(trains))]
    sd = SpikeData(trains, length=100.0, neuron_attributes=attributes)
    units = units_arrow_table(sd, source=source, dataset_id=dataset, asset_id=asset)
    return Publication((source, dataset, asset), units, {"status": "ok", "input": {}})


@pytest.fixture
def lake(tmp_path):
    root = str(tmp_path / "lake")
    publish(
        root,
        [
            entry("files", "mydata", "a.nwb", [[1.0], [2.0, 3.0]]),
            entry("files", "mydata", "b.nwb", [[4.0]]),
            entry("dandi", "000001", "a.nwb", [[5.0]]),
        ],
    )
    time.sleep(0.02)
    publish(root, [Publication(("files", "inputs", "broken.nwb"), None, {"status": "failed"})])
    for key in [("files", "mydata", "a.nwb"), ("files", "inputs", "broken.nwb")]:
        put_bytes(Lake(root).manifest_path(*key), b"{}")
        put_bytes(Lake(root).raster_path(*key), b"png")
    return root


def units_of(root, as_of=None):
    query = "SELECT source, dataset_id, asset_id, count(*) FROM units GROUP BY ALL ORDER BY ALL"
    return connect(root, as_of).execute(query).fetchall()


def test_removing_one_asset_unpublishes_it_in_one_commit_and_cleans_up(lake, capsys):
    before = units_of(lake)
    assert run(["lake", "remove", "--asset", "a.nwb", "--source", "files", "--lake", lake]) == 0
    out = capsys.readouterr().out
    assert "removed files/mydata/a.nwb" in out and "2 units rows" in out
    assert "dandi/000001/a.nwb" not in out  # --source narrowed it
    assert units_of(lake) == [("dandi", "000001", "a.nwb", 1), ("files", "mydata", "b.nwb", 1)]
    assert ("files", "mydata", "a.nwb") not in assets_index(lake)
    assert not Path(Lake(lake).manifest_path("files", "mydata", "a.nwb")).exists()
    assert not Path(Lake(lake).raster_path("files", "mydata", "a.nwb")).exists()
    # time travel still reaches the removed rows until compaction
    assert units_of(lake, as_of=0) == before


def test_removing_a_failed_dataset_takes_it_out_of_the_summary(lake, capsys):
    assert ("files", "inputs", 0, 0, 0, 1, 0) in summary_rows(lake)
    assert run(["lake", "remove", "--dataset", "inputs", "--lake", lake]) == 0
    assert "removed files/inputs/broken.nwb" in capsys.readouterr().out
    assert [row[:2] for row in summary_rows(lake)] == [("dandi", "000001"), ("files", "mydata")]
    assert not Path(Lake(lake).manifest_path("files", "inputs", "broken.nwb")).exists()


def test_removing_a_whole_dataset_from_python(lake):
    removed = remove_assets(lake, dataset="mydata")
    assert removed.assets == [("files", "mydata", "a.nwb"), ("files", "mydata", "b.nwb")]
    assert removed.units == 3 and removed.last_version == 0
    assert units_of(lake) == [("dandi", "000001", "a.nwb", 1)]
    assert units_of(lake, as_of=removed.last_version)[1:] == [
        ("files", "mydata", "a.nwb", 2),
        ("files", "mydata", "b.nwb", 1),
    ]


def test_nothing_to_remove_is_a_usage_error(lake, capsys):
    assert run(["lake", "remove", "--dataset", "nope", "--lake", lake]) == 2
    assert "no asset in lake" in (err := capsys.readouterr().err) and "dataset nope" in err
    with pytest.raises(ValueError, match="needs assets"):
        remove_assets(lake)
    assert run(["lake", "remove", "--lake", lake]) == 2  # neither --asset nor --dataset
    assert "needs --asset ID or --dataset NAME" in capsys.readouterr().err


def test_an_asset_id_with_a_dataset_removes_only_that_datasets(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    for dataset in ("demo", "mydata"):
        sd = SpikeData([[1.0]], length=10.0)
        units = units_arrow_table(sd, source="files", dataset_id=dataset, asset_id="spikes.h5")
        publish(lake, [Publication(("files", dataset, "spikes.h5"), units, {"status": "ok"})])
    argv = ["lake", "remove", "--asset", "spikes.h5", "--dataset", "demo", "--lake", lake]
    assert run(argv) == 0
    assert sorted(assets_index(lake)) == [("files", "mydata", "spikes.h5")]
    assert run(["lake", "history", "--limit", "3", "--lake", lake]) == 0
    assert " 1 " in capsys.readouterr().out.splitlines()[-1]  # the removal counts its asset


@pytest.mark.usefixtures("prefect_harness")
def test_a_failed_input_leaves_no_dataset_once_it_lands_elsewhere(tmp_path):
    import numpy as np

    from spikelab.demo_data import write_hdf5
    from spikelab.flows import ingest_files, run_summary

    path = tmp_path / "incoming" / "s.h5"
    path.parent.mkdir()
    path.write_bytes(b"not an HDF5 file")
    lake = str(tmp_path / "lake")
    state = ingest_files([str(path)], lake=lake, return_state=True)
    assert run_summary(state)["counts"]["failed"] == 1
    assert [row[:2] for row in summary_rows(lake)] == [("files", "incoming")]
    write_hdf5(path, np.random.default_rng(4))  # fixed, and filed under its real dataset
    summary = ingest_files([str(path)], lake=lake, dataset="mouse-42")
    assert summary["counts"]["ok"] == 1
    assert [row[:3] for row in summary_rows(lake)] == [("files", "mouse-42", 1)]
    assert not (Path(lake) / "manifests/source=files/dataset=incoming/s.h5.json").exists()
