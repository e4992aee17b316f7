"""Spike trains out of the lake: SpikeData in Python, NWB, SpikeLab .npz and Parquet files."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from spikelab.cli import run
from spikelab.exceptions import UnpicklingWarning
from spikelab.io.delta_lake import Publication, publish
from spikelab.io.lake import lake_spikedata
from spikelab.io.lake_export import export_selection
from spikelab.io.units_table import units_arrow_table
from spikelab.loaders import load_spikedata_from_nwb, load_spikedata_from_spikelab_sorted_npz
from spikelab.spikedata import SpikeData

SUBJECT = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}
A_TRAINS = [[1.5, 20.25, 300.125], [2.0], [0.0, 999.0]]
B_TRAINS = [[4.0, 5.0], [7.5]]


def asset(key, trains, regions, metadata):
    attributes = [
        {"unit_id": 10 + i, "location_label": region, "electrode": i, "location": [1.0 * i, 2.0]}
        for i, region in enumerate(regions)
    ]
    sd = SpikeData(trains, length=1000.0, neuron_attributes=attributes, metadata=metadata)
    units = units_arrow_table(sd, source=key[0], dataset_id=key[1], asset_id=key[2])
    return Publication(key, units, {"status": "ok", "input": {}})


@pytest.fixture
def lake(tmp_path):
    root = str(tmp_path / "lake")
    metadata = {**SUBJECT, "sampling_rate_hz": 30000.0}
    publish(
        root,
        [
            asset(("files", "d", "a.nwb"), A_TRAINS, ["CA1", "DG", "CA1"], metadata),
            asset(("dandi", "000001", "b"), B_TRAINS, ["CA1", "CA3"], metadata),
        ],
    )
    return root


def trains_of(sd):
    return [list(train) for train in sd.train]


def test_python_gives_one_spikedata_per_asset(lake):
    selection = lake_spikedata(lake, regions=["CA1"])
    assert [sd.metadata["asset_id"] for sd in selection] == ["b", "a.nwb"]  # dandi < files
    b, a = selection
    assert trains_of(a) == [A_TRAINS[0], A_TRAINS[2]]
    assert [u["unit_id"] for u in a.neuron_attributes] == [10, 12]
    assert a.neuron_attributes[1]["location"] == [2.0, 2.0]
    assert a.neuron_attributes[1]["location_label"] == "CA1"
    assert a.length == 1000.0 and a.metadata["species"] == "Mus musculus"
    assert trains_of(b) == [B_TRAINS[0]]
    assert lake_spikedata(lake, regions=["VISp"]) == []


def test_npz_round_trip_gives_the_same_times_and_ids(lake, tmp_path):
    output = tmp_path / "a.npz"
    assert run(["lake", "export", "--dataset", "d", "--format", "npz", "--output", str(output),
                "--lake", lake]) == 0  # fmt: skip
    with pytest.warns(UnpicklingWarning):
        back = load_spikedata_from_spikelab_sorted_npz(output)
    assert trains_of(back) == A_TRAINS
    assert [u["unit_id"] for u in back.neuron_attributes] == [10, 11, 12]


def test_nwb_round_trip_is_dandi_ready(lake, tmp_path, recwarn):
    output = tmp_path / "a.nwb"
    exported = export_selection(lake, output, "nwb", dataset="d")
    assert (exported.assets, exported.units) == (1, 3)
    assert not [w for w in recwarn if "DANDI" in str(w.message)]  # subject and rate known
    back = load_spikedata_from_nwb(output)
    assert trains_of(back) == A_TRAINS
    assert [u["unit_id"] for u in back.neuron_attributes] == [10, 11, 12]
    assert [u["location_label"] for u in back.neuron_attributes] == ["CA1", "DG", "CA1"]
    assert back.metadata["subject_id"] == "m1"


def test_several_assets_go_to_one_file_with_unique_unit_ids(lake, tmp_path):
    output = tmp_path / "ca1.npz"
    assert export_selection(lake, output, "npz", regions=["CA1"]).units == 3
    with pytest.warns(UnpicklingWarning):
        back = load_spikedata_from_spikelab_sorted_npz(output)
    assert [u["unit_id"] for u in back.neuron_attributes] == [
        "000001/b/10",
        "d/a.nwb/10",
        "d/a.nwb/12",
    ]
    assert trains_of(back) == [B_TRAINS[0], A_TRAINS[0], A_TRAINS[2]]


def test_parquet_holds_the_units_rows_with_their_spike_times(lake, tmp_path, capsys):
    output = tmp_path / "units.parquet"
    argv = ["lake", "export", "--region", "CA1", "--format", "parquet", "--output", str(output)]
    assert run([*argv, "--lake", lake]) == 0
    assert "3 units of 2 asset(s)" in capsys.readouterr().out
    table = pq.read_table(output).to_pydict()
    assert table["spike_times_ms"] == [B_TRAINS[0], A_TRAINS[0], A_TRAINS[2]]
    assert table["unit_id"] == ["10", "10", "12"]


def test_nothing_to_export_is_a_usage_error(lake, tmp_path, capsys):
    output = tmp_path / "none.nwb"
    argv = ["lake", "export", "--region", "VISp", "--format", "nwb", "--output", str(output)]
    assert run([*argv, "--lake", lake]) == 2
    assert "nothing to export" in capsys.readouterr().err and not output.exists()


def test_exported_times_are_float64_milliseconds(lake):
    (a,) = lake_spikedata(lake, dataset="d")
    assert all(train.dtype == np.float64 for train in a.train)
