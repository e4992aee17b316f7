"""The local-files flow on the demo dataset (NWB + KiloSort + HDF5), on a real Prefect backend."""

import json
from pathlib import Path

import pytest

from spikelab.demo_data import write_demo_dataset
from spikelab.exceptions import IngestFailedError
from spikelab.flows import ingest_files, run_summary
from spikelab.io.delta_lake import assets_index
from spikelab.io.delta_read import open_units
from spikelab.io.lake import connect
from spikelab.io.manifest import read_manifest
from spikelab.loaders import (
    load_spikedata_from_hdf5,
    load_spikedata_from_kilosort,
    load_spikedata_from_nwb,
)
from spikelab.loaders.formats import detect_format, hdf5_options, kilosort_options

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "inputs")


def test_formats_are_detected(demo):
    nwb, kilosort, hdf5 = demo
    assert [detect_format(p) for p in demo] == ["nwb", "kilosort", "hdf5"]
    assert kilosort_options(kilosort) == {"fs_Hz": 30000.0}
    assert hdf5_options(hdf5)["spike_times_dataset"] == "spike_times"
    with pytest.raises(ValueError, match="cannot tell the format of .*notes.txt"):
        detect_format(Path("notes.txt"))


def test_files_flow_loads_every_source_into_one_lake(demo, tmp_path):
    lake = str(tmp_path / "lake")
    bad = tmp_path / "inputs" / "broken.nwb"
    bad.parent.mkdir()
    bad.write_bytes(b"not hdf5 at all")
    state = ingest_files([*map(str, demo), str(bad)], lake=lake, return_state=True)
    assert state.is_failed() and state.message == "3 loaded, 0 skipped, 1 failed"
    summary = run_summary(state)
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 1}
    failed = [a for a in summary["assets"] if a["status"] == "failed"]
    assert failed[0]["asset_id"] == "broken.nwb" and "not a readable" in failed[0]["error"]
    with pytest.raises(IngestFailedError, match="0 loaded, 0 skipped, 1 failed") as raised:
        ingest_files([str(bad)], lake=lake)
    assert raised.value.summary["assets"][0]["asset_id"] == "broken.nwb"

    nwb, kilosort, hdf5 = demo
    expected = {
        "session.nwb": load_spikedata_from_nwb(nwb),
        "kilosort": load_spikedata_from_kilosort(kilosort, fs_Hz=30000.0),
        "spikes.h5": load_spikedata_from_hdf5(
            hdf5, spike_times_dataset="spike_times", spike_times_index_dataset="spike_times_index"
        ),
    }
    newest = open_units(lake).version()
    for asset, sd in expected.items():
        trains = (
            connect(lake)
            .execute(
                "SELECT spike_times_ms FROM units WHERE dataset_id = 'inputs' AND asset_id = ? "
                "ORDER BY unit_index",
                [asset],
            )
            .fetchall()
        )
        assert [list(t) for (t,) in trains] == [t.tolist() for t in sd.train], asset
        manifest = read_manifest(
            Path(lake, "manifests", "source=files", "dataset=inputs", f"{asset}.json")
        )
        assert manifest["status"] == "ok" and manifest["spikedata"]["N"] == sd.N
        units_output, raster_output = manifest["outputs"]
        assert units_output == {
            "table": "units",
            "version": manifest["table_version"],
            "rows": sd.N,
        }
        assert 0 <= units_output["version"] < newest  # one commit for the batch, then a delete
        assert Path(raster_output["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not Path(lake, "units").exists()  # no per-asset Parquet files any more
    index = assets_index(lake)
    assert index[("files", "inputs", "broken.nwb")].status == "failed"
    assert index[("files", "inputs", "kilosort")].content_id.startswith("kilosort:sha256:")

    kilosort_units = expected["kilosort"].N
    assert kilosort_units == 14  # two noise clusters dropped
    rows = (
        connect(lake)
        .execute("SELECT asset_id, count(*) FROM units GROUP BY asset_id ORDER BY asset_id")
        .fetchall()
    )
    assert rows == [("kilosort", 14), ("session.nwb", 24), ("spikes.h5", 12)]
    ca1 = (
        connect(lake).execute("SELECT count(*) FROM units WHERE location_label = 'CA1'").fetchone()
    )
    assert ca1 == (12,)
    run = json.loads(Path(lake, "runs", f"{summary['flow_run_id']}.json").read_text())
    assert run["counts"] == summary["counts"]

    again = ingest_files([*map(str, demo)], lake=lake)
    assert again["counts"] == {"ok": 0, "skipped": 3, "failed": 0}
    assert open_units(lake).version() == newest  # nothing committed for skipped assets
    refreshed = ingest_files([*map(str, demo)], lake=lake, refresh=True)
    assert refreshed["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert connect(lake).execute("SELECT count(*) FROM units").fetchone() == (50,)


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        ingest_files([str(tmp_path)], format="csv", lake=str(tmp_path / "lake"))


def test_a_zarr_nwb_folder_is_ingested_as_nwb_and_its_chunks_are_its_content(tmp_path):
    from nwb_fixtures import rich_nwbfile, write_zarr

    folder = write_zarr(rich_nwbfile(), tmp_path / "session.nwb.zarr")
    assert detect_format(folder) == "nwb"
    lake = str(tmp_path / "lake")
    summary = ingest_files([str(folder)], lake=lake)
    expected = load_spikedata_from_nwb(folder)
    assert summary["counts"]["ok"] == 1 and summary["assets"][0]["units"] == expected.N
    rows = connect(lake).execute("SELECT count(*) FROM units").fetchone()
    assert rows == (expected.N,)
    # A changed chunk deep inside the store is a changed input: loaded again, not skipped.
    rerun = ingest_files([str(folder)], lake=lake)
    assert rerun["counts"]["skipped"] == 1
    assert rerun["assets"][0]["units"] == expected.N  # from the assets index, no manifest read
    chunk = next(p for p in sorted(folder.rglob("*")) if p.is_file() and p.parent != folder)
    chunk.write_bytes(chunk.read_bytes() + b"\0")
    again = run_summary(ingest_files([str(folder)], lake=lake, return_state=True))
    assert again["counts"]["skipped"] == 0


def test_a_folder_that_is_neither_kilosort_nor_zarr_nwb_is_named(tmp_path):
    with pytest.raises(ValueError, match="neither a KiloSort folder .* nor a Zarr NWB folder"):
        detect_format(tmp_path)
