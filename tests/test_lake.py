import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from spikelab.io import storage, units_table
from spikelab.io.delta_lake import publish
from spikelab.io.lake import Lake, connect, open_lake, safe_key
from spikelab.io.manifest import read_manifest, spikedata_summary, write_manifest
from spikelab.io.units_table import read_units_table, units_arrow_table, write_units_table
from spikelab.spikedata import SpikeData


def nwb_like() -> SpikeData:
    return SpikeData(
        [[1.0, 2.5, 9.75], [], [3.0]],
        length=11.0,
        start_time=-1.0,
        neuron_attributes=[
            {
                "unit_id": 3,
                "electrode": 1,
                "location": [1.0, 2.0, 3.0],
                "location_label": "CA1",
                "group_name": "shank0",
                "snr": 2.5,
                "quality": "good",
                "source": "sorter",
            },
            {
                "unit_id": 5,
                "electrode": 2,
                "location": [4.0, 5.0, 6.0],
                "location_label": "DG",
                "group_name": "shank0",
                "snr": 1.25,
                "quality": "mua",
                "source": "sorter",
            },
            {
                "unit_id": 9,
                "location": [7.0, 8.0],
                "snr": 4.0,
                "quality": "good",
                "source": "sorter",
                "template": np.zeros(4),
            },
        ],
        metadata={
            "identifier": "s1",
            "electrodes_by_channel": {1: {"location": "CA1"}},
            "fs_Hz": 30000.0,
            "channel_locations": np.arange(6.0).reshape(3, 2),
        },
    )


def test_units_table_hash_covers_every_piece_in_order(tmp_path):
    rng = np.random.default_rng(3)
    trains = [np.sort(rng.uniform(0, 1e6, 150_000)) for _ in range(4)]  # several MB of pages
    out = write_units_table(
        SpikeData(trains, length=1e6),
        tmp_path / "u.parquet",
        source="s",
        dataset_id="d",
        asset_id="a",
    )
    data = (tmp_path / "u.parquet").read_bytes()
    assert len(data) > 4_000_000 and out["sha256"] == hashlib.sha256(data).hexdigest()
    assert [t.tolist() for t in read_units_table(tmp_path / "u.parquet").train] == [
        t.tolist() for t in trains
    ]


def test_units_table_takes_end_to_end_trains_without_a_copy():
    flat = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    sd = SpikeData.from_flat(flat, [2, 2, 5, 6], length=10.0)
    values = units_table._end_to_end(sd.train)
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and np.shares_memory(values, flat)
    part = SpikeData.from_flat(flat, [2, 2, 5, 6], length=10.0, units=[2, 0])
    values = units_table._end_to_end(part.train)  # not in buffer order: copied
    assert values.tolist() == [3.0, 4.0, 5.0, 1.0, 2.0] and not np.shares_memory(values, flat)
    trimmed = SpikeData.from_flat(flat[1:5], [1, 4], length=10.0)
    assert units_table._end_to_end(trimmed.train).tolist() == [2.0, 3.0, 4.0, 5.0]
    assert units_table._end_to_end(SpikeData([[1.0], [0.5]]).train).tolist() == [1.0, 0.5]


def test_units_table_columns_and_values(tmp_path):
    sd = nwb_like()
    out = write_units_table(
        sd, tmp_path / "u.parquet", source="dandi", dataset_id="000888", asset_id="a1"
    )
    data = (tmp_path / "u.parquet").read_bytes()
    assert out == {
        "path": str(tmp_path / "u.parquet"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": 3,
        "skipped_columns": {"template": "it holds a ndarray; only scalar attributes get a column"},
    }
    table = pq.read_table(tmp_path / "u.parquet")
    assert table.column_names[:14] == [
        "source",
        "dataset_id",
        "asset_id",
        "unit_index",
        "unit_id",
        "n_spikes",
        "firing_rate_hz",
        "spike_times_ms",
        "location_x",
        "location_y",
        "location_z",
        "location_label",
        "group_name",
        "electrode",
    ]
    rows = table.to_pylist()
    assert rows[0]["spike_times_ms"] == [1.0, 2.5, 9.75]
    assert [r["unit_id"] for r in rows] == ["3", "5", "9"]
    assert [r["n_spikes"] for r in rows] == [3, 0, 1]
    assert rows[0]["firing_rate_hz"] == pytest.approx(3 / 11.0 * 1000)
    assert [r["location_label"] for r in rows] == ["CA1", "DG", None]
    assert [r["electrode"] for r in rows] == [1, 2, None]
    assert [r["location_z"] for r in rows] == [3.0, 6.0, None]
    assert [r["snr"] for r in rows] == [2.5, 1.25, 4.0]
    assert [r["attr_source"] for r in rows] == ["sorter"] * 3  # name clash gets a prefix
    assert "template" not in table.column_names  # arrays stay out of the table
    assert str(table.schema.field("spike_times_ms").type) == "list<element: double>"
    assert str(table.schema.field("unit_index").type) == "int32"


def test_units_table_round_trip_is_exact(tmp_path):
    sd = nwb_like()
    write_units_table(sd, tmp_path / "u.parquet", source="files", dataset_id="d", asset_id="a")
    back = read_units_table(tmp_path / "u.parquet")
    expected_attributes = [dict(a) for a in sd.neuron_attributes]
    del expected_attributes[2]["template"]
    assert back.neuron_attributes == expected_attributes
    assert [t.tolist() for t in back.train] == [t.tolist() for t in sd.train]
    assert (back.length, back.start_time) == (11.0, -1.0)
    assert back.metadata.keys() == sd.metadata.keys()
    assert back.metadata["electrodes_by_channel"] == {1: {"location": "CA1"}}
    np.testing.assert_array_equal(back.metadata["channel_locations"], np.arange(6.0).reshape(3, 2))


def test_empty_units_table(tmp_path):
    sd = SpikeData([], metadata={"identifier": "raw"})
    out = write_units_table(
        sd, tmp_path / "e.parquet", source="dandi", dataset_id="1", asset_id="x"
    )
    assert out["rows"] == 0
    assert read_units_table(tmp_path / "e.parquet") == sd


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        write_units_table(
            nwb_like(), tmp_path / "u.parquet", source="s", dataset_id="d", asset_id="a"
        )
    assert list(tmp_path.iterdir()) == []


def test_manifest_fields(tmp_path):
    sd = nwb_like()
    manifest = write_manifest(
        tmp_path / "m.json",
        source="dandi",
        dataset_id="000888",
        asset_id="a1",
        status="ok",
        version="draft",
        source_reference="https://x/assets/a1/",
        input={"url": "https://x/assets/a1/", "size": 10, "sha256": "ab"},
        outputs=[{"path": "u.parquet", "sha256": "cd", "rows": 3}],
        spikedata=spikedata_summary(sd),
        metadata=sd.metadata,
        flow_run_id="run-1",
    )
    assert read_manifest(tmp_path / "m.json") == manifest
    assert manifest["spikedata"] == {
        "N": 3,
        "total_spikes": 4,
        "length_ms": 11.0,
        "start_time_ms": -1.0,
    }
    assert manifest["metadata"]["electrodes_by_channel"] == {"1": {"location": "CA1"}}
    assert manifest["metadata"]["channel_locations"] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert manifest["software"]["spikelab"] == "0.1.0"
    assert {k: manifest[k] for k in ("schema_version", "status", "error", "flow_run_id")} == {
        "schema_version": "1",
        "status": "ok",
        "error": None,
        "flow_run_id": "run-1",
    }
    assert manifest["created_at"].endswith("+00:00")


def test_failed_manifest_has_no_spikedata(tmp_path):
    manifest = write_manifest(
        tmp_path / "f.json",
        source="dandi",
        dataset_id="1",
        asset_id="a",
        status="failed",
        error="digest mismatch",
    )
    assert (manifest["status"], manifest["error"], manifest["spikedata"]) == (
        "failed",
        "digest mismatch",
        None,
    )


def test_lake_paths_and_safe_keys():
    lake = Lake("/data/lake/")
    assert lake.units_path("dandi", "000888", "a/b c") == (
        "/data/lake/units/source=dandi/dataset=000888/a_b_c.parquet"
    )
    assert lake.manifest_path("ibl", "eid", "pid") == (
        "/data/lake/manifests/source=ibl/dataset=eid/pid.json"
    )
    assert lake.raw_path("x") == "/data/lake/raw/x.zarr"
    assert lake.run_path("r") == "/data/lake/runs/r.json"
    assert safe_key("../../etc/passwd") == "etc_passwd"


def fill(root: str) -> None:
    """Two assets of two sources with different attribute columns, one commit each."""
    dandi = units_arrow_table(nwb_like(), source="dandi", dataset_id="000888", asset_id="a1")
    publish(root, [(("dandi", "000888", "a1"), dandi, {"status": "ok"})])
    ibl = SpikeData(
        [[5.0]],
        length=6.0,
        neuron_attributes=[{"unit_id": 1, "location_label": "CA1", "beryl": "CA1"}],
    )
    ibl_units = units_arrow_table(ibl, source="ibl", dataset_id="eid-1", asset_id="pid-1")
    publish(root, [(("ibl", "eid-1", "pid-1"), ibl_units, {"status": "ok"})])


def test_open_lake_unifies_sources_and_keeps_ids_as_text(tmp_path):
    root = str(tmp_path / "lake")
    fill(root)
    table = open_lake(root).to_table()
    assert table.num_rows == 4
    assert str(table.schema.field("dataset_id").type) == "string"
    frame = table.to_pandas().sort_values(["source", "unit_index"])
    assert frame["dataset_id"].tolist() == ["000888", "000888", "000888", "eid-1"]
    assert frame["beryl"].tolist()[-1] == "CA1" and frame["snr"].isna().tolist()[-1]
    ca1 = open_lake(root).to_table(filter=(pa_field("location_label") == "CA1"))
    assert sorted(ca1.column("asset_id").to_pylist()) == ["a1", "pid-1"]
    first = open_lake(root, as_of=0).to_table()  # before the IBL asset landed
    assert first.column("asset_id").to_pylist() == ["a1"] * 3


def pa_field(name):
    import pyarrow.dataset as ds

    return ds.field(name)


def test_duckdb_units_view(tmp_path):
    root = str(tmp_path / "lake")
    fill(root)
    connection = connect(root)
    rows = connection.execute(
        "SELECT source, dataset_id, unit_id, beryl, snr FROM units ORDER BY source, unit_index"
    ).fetchall()
    assert rows == [
        ("dandi", "000888", "3", None, 2.5),
        ("dandi", "000888", "5", None, 1.25),
        ("dandi", "000888", "9", None, 4.0),
        ("ibl", "eid-1", "1", "CA1", None),
    ]
    assert connect(root, as_of=0).execute("SELECT count(*) FROM units").fetchone() == (3,)


def test_a_file_dropped_into_the_table_folder_is_never_read(tmp_path):
    root = str(tmp_path / "lake")
    fill(root)
    (tmp_path / "lake" / "tables" / "units" / "part-foreign.parquet").write_bytes(b"junk")
    assert connect(root).execute("SELECT count(*) FROM units").fetchone() == (4,)


def test_empty_lake(tmp_path):
    assert open_lake(tmp_path / "nothing").to_table().num_rows == 0
    assert connect(tmp_path / "nothing").execute("SELECT count(*) FROM units").fetchone() == (0,)


@pytest.fixture
def s3_lake(aws_env, empty_moto):
    empty_moto.create_bucket(Bucket="lake-bucket")
    return Lake("s3://lake-bucket/prefix")


def test_lake_on_s3(s3_lake, uploader):
    fill(s3_lake.root)
    write_manifest(
        s3_lake.manifest_path("dandi", "000888", "a1"),
        source="dandi",
        dataset_id="000888",
        asset_id="a1",
        status="ok",
    )
    keys = sorted(o["Key"] for o in uploader.list_objects_v2(Bucket="lake-bucket")["Contents"])
    assert "prefix/manifests/source=dandi/dataset=000888/a1.json" in keys
    assert "prefix/tables/units/_delta_log/00000000000000000001.json" in keys
    assert "prefix/tables/assets/_delta_log/00000000000000000001.json" in keys
    assert read_manifest(s3_lake.manifest_files()[0])["status"] == "ok"
    table = open_lake(s3_lake.root).to_table()
    assert sorted(set(table.column("dataset_id").to_pylist())) == ["000888", "eid-1"]
    trains = {
        row["unit_id"]: row["spike_times_ms"]
        for row in table.select(["unit_id", "spike_times_ms"]).to_pylist()
    }
    assert trains == {"3": [1.0, 2.5, 9.75], "5": [], "9": [3.0], "1": [5.0]}
    assert connect(s3_lake.root).execute("SELECT count(*) FROM units").fetchone() == (4,)
    assert connect(s3_lake.root, as_of=0).execute("SELECT count(*) FROM units").fetchone() == (3,)
    assert json.loads(storage.get_bytes(s3_lake.manifest_files()[0]))["asset_id"] == "a1"
