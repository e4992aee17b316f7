import json
import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from spikelab.exceptions import LakeSchemaError, LakeVersionError
from spikelab.io import delta_lake, storage
from spikelab.io.delta_lake import (
    AssetState,
    Publication,
    assets_index,
    open_table,
    publish,
    units_uri,
)
from spikelab.io.delta_migrate import migrate
from spikelab.io.delta_read import connect, history, open_units, parse_as_of
from spikelab.io.delta_upkeep import compact
from spikelab.io.manifest import read_manifest, spikedata_summary, write_manifest
from spikelab.io.units_table import read_units_table, units_arrow_table, write_units_table
from spikelab.spikedata import SpikeData


def spikes(n_units, seed=0, extra=None, region="CA1"):
    rng = np.random.default_rng(seed)
    trains = [np.sort(rng.uniform(0, 1000, 3 + i)) for i in range(n_units)]
    attributes = [
        {"unit_id": 10 + i, "location_label": region, "electrode": i, **(extra or {})}
        for i in range(n_units)
    ]
    return SpikeData(trains, length=1000.0, neuron_attributes=attributes, metadata={"k": seed})


def entry(key, sd, content_id="c1", status="ok", **manifest):
    units = units_arrow_table(sd, source=key[0], dataset_id=key[1], asset_id=key[2])
    given = {"content_id": content_id, "listed_id": f"list-{content_id}"}
    return Publication(key, units, {"status": status, "input": given, **manifest})


def rows(lake, as_of=None):
    query = (
        "SELECT source, dataset_id, asset_id, unit_index, unit_id, spike_times_ms "
        "FROM units ORDER BY ALL"
    )
    return connect(lake, as_of=as_of).execute(query).fetchall()


A = ("dandi", "000001", "sub-1.nwb")
B = ("ibl", "eid-1", "pid-1")


def test_republishing_an_asset_replaces_its_rows(tmp_path):
    first = spikes(3, seed=1)
    assert publish(tmp_path, [entry(A, first)]) == 0
    second = spikes(2, seed=2)
    assert publish(tmp_path, [entry(A, second, content_id="c2")]) == 1
    found = rows(tmp_path)
    assert [r[3] for r in found] == [0, 1]  # two units, not five
    assert [r[5] for r in found] == [t.tolist() for t in second.train]
    assert [r[4] for r in found] == ["10", "11"]
    assert assets_index(tmp_path) == {A: AssetState("c2", "list-c2", "ok", 1, rows=2)}


def test_several_assets_land_in_one_commit_with_their_own_columns(tmp_path):
    version = publish(
        tmp_path,
        [entry(A, spikes(2, extra={"snr": 1.5})), entry(B, spikes(1, extra={"amp": "x"}))],
        flow_run_id="run-7",
    )
    assert version == 0
    table = connect(tmp_path).execute(
        "SELECT asset_id, snr, amp, dataset_id FROM units ORDER BY asset_id, unit_index"
    )
    assert table.fetchall() == [
        ("pid-1", None, "x", "eid-1"),
        ("sub-1.nwb", 1.5, None, "000001"),
        ("sub-1.nwb", 1.5, None, "000001"),
    ]
    (latest,) = history(tmp_path)
    assert (latest["version"], latest["assets"], latest["flow_run_id"]) == (0, 2, "run-7")
    assert latest["operation"] == "WRITE" and latest["timestamp"].tzinfo is UTC


def test_whole_and_fractional_attributes_share_a_float_column(tmp_path):
    publish(tmp_path, [entry(A, spikes(1, extra={"count": 3}))])
    publish(tmp_path, [entry(B, spikes(1, extra={"count": 2.5}))])
    found = connect(tmp_path).execute("SELECT asset_id, count FROM units ORDER BY 1").fetchall()
    assert found == [("pid-1", 2.5), ("sub-1.nwb", 3.0)]


def test_a_column_of_another_kind_is_refused_and_the_table_is_unchanged(tmp_path):
    publish(tmp_path, [entry(A, spikes(1, extra={"quality": 0.5}))])
    before = rows(tmp_path)
    with pytest.raises(LakeSchemaError, match="column 'attr_quality'.*holds double.*Rename"):
        publish(tmp_path, [entry(B, spikes(1, extra={"quality": "good"}))])
    assert rows(tmp_path) == before
    assert open_table(units_uri(tmp_path)).version() == 0
    assert set(assets_index(tmp_path)) == {A}


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ([entry(A, spikes(1)), entry(A, spikes(2))], "same asset twice"),
        ([Publication(B, entry(A, spikes(1)).units, {})], "another source than the key"),
    ],
)
def test_inconsistent_batches_are_refused(tmp_path, batch, message):
    with pytest.raises(ValueError, match=message):
        publish(tmp_path, batch)
    assert open_table(units_uri(tmp_path)) is None


def test_assets_row_keeps_manifest_metadata_and_version(tmp_path):
    sd = spikes(2, seed=3)
    publish(tmp_path, [entry(A, sd, flow_run_id="run-1", spikedata=spikedata_summary(sd))])
    table = open_table(delta_lake.assets_uri(tmp_path)).to_pyarrow_table().to_pylist()
    (row,) = table
    assert (row["rows"], row["version"], row["flow_run_id"], row["status"]) == (2, 0, "run-1", "ok")
    manifest = json.loads(row["manifest"])
    assert manifest["table_version"] == 0 and manifest["spikedata"]["N"] == 2
    footer = json.loads(row["units_metadata"])
    assert (footer["length_ms"], footer["asset_id"], footer["metadata"]) == (
        1000.0,
        "sub-1.nwb",
        {"k": 3},
    )
    assert datetime.now(UTC) - row["published_at"] < timedelta(minutes=5)


def test_a_failed_asset_updates_its_row_and_keeps_its_units(tmp_path):
    publish(tmp_path, [entry(A, spikes(2))])
    publish(tmp_path, [Publication(A, None, {"status": "failed", "error": "boom"})])
    assert assets_index(tmp_path)[A] == AssetState(None, None, "failed", None)
    assert len(rows(tmp_path)) == 2
    assert open_table(units_uri(tmp_path)).version() == 0  # units untouched


def test_an_asset_with_no_units_removes_its_old_rows(tmp_path):
    publish(tmp_path, [entry(A, spikes(2)), entry(B, spikes(1))])
    publish(tmp_path, [entry(A, SpikeData([], length=5.0))])
    assert {r[2] for r in rows(tmp_path)} == {"pid-1"}
    assert assets_index(tmp_path)[A].version == 1


def test_time_travel_by_version_and_time(tmp_path):
    publish(tmp_path, [entry(A, spikes(1))])
    publish(tmp_path, [entry(B, spikes(2))])
    # the time version 0 was committed, as the log recorded it: version 1 came later
    times = {item["version"]: item["timestamp"] for item in history(tmp_path)}
    assert times[0] < times[1]
    between = times[0]
    assert len(rows(tmp_path)) == 3
    assert len(rows(tmp_path, as_of=0)) == 1 and len(rows(tmp_path, as_of="0")) == 1
    assert len(rows(tmp_path, as_of=between)) == 1
    assert len(rows(tmp_path, as_of=between.isoformat())) == 1
    with pytest.raises(LakeVersionError, match="versions 0 to 1, not 5"):
        connect(tmp_path, as_of=5)
    with pytest.raises(LakeVersionError, match="did not exist yet"):
        connect(tmp_path, as_of="2000-01-01T00:00:00Z")
    with pytest.raises(LakeVersionError, match="neither a version number nor"):
        parse_as_of("yesterday")
    assert parse_as_of("2026-01-02T03:04:05") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_the_commit_time_history_shows_reads_that_very_version(tmp_path):
    for n in (1, 2, 3):  # commits a few milliseconds apart
        publish(tmp_path, [entry(A, spikes(n))])
    units_history = [h for h in history(tmp_path) if h["operation"] != "CREATE TABLE"]
    for item in units_history:
        when = datetime.fromisoformat(str(item["timestamp"]))
        assert open_units(tmp_path, as_of=when).version() == item["version"], item


def test_an_empty_lake_has_an_empty_units_view(tmp_path):
    connection = connect(tmp_path / "nothing")
    columns = [row[0] for row in connection.execute("DESCRIBE units").fetchall()]
    assert columns[:4] == ["source", "dataset_id", "asset_id", "unit_index"]
    assert "dataset" not in columns and connection.execute(
        "SELECT count(*) FROM units"
    ).fetchone() == (0,)
    assert assets_index(tmp_path / "nothing") == {} and history(tmp_path / "nothing") == []
    assert open_units(tmp_path / "nothing") is None
    with pytest.raises(LakeVersionError, match="no table yet"):
        open_units(tmp_path / "nothing", as_of=0)


def test_compaction_keeps_answers_and_time_travel(tmp_path):
    keys = [("files", "d", f"a{i:02d}") for i in range(12)]
    for index, key in enumerate(keys):
        publish(tmp_path, [entry(key, spikes(1 + index % 3, seed=index))])
    before = rows(tmp_path)
    reader = connect(tmp_path)  # a reader that opened its snapshot before the compaction
    files_before = len(open_table(units_uri(tmp_path)).file_uris())
    report = compact(tmp_path)
    assert reader.execute("SELECT count(*) FROM units").fetchone() == (len(before),)
    assert files_before == 12 and report["units"]["files_removed"] == 12
    assert len(open_table(units_uri(tmp_path)).file_uris()) == 1
    assert rows(tmp_path) == before
    assert len(rows(tmp_path, as_of=0)) == 1  # the default retention keeps old files
    assert report["units"]["files_vacuumed"] == 0
    assert history(tmp_path)[-1]["version"] == 0
    assert any(h["operation"] == "OPTIMIZE" for h in history(tmp_path))
    assert set(assets_index(tmp_path)) == set(keys)
    log = (tmp_path / "tables" / "units" / "_delta_log").iterdir()
    assert any(path.name.endswith(".checkpoint.parquet") for path in log)


def test_compaction_with_no_retention_deletes_replaced_files(tmp_path):
    publish(tmp_path, [entry(A, spikes(1))])
    publish(tmp_path, [entry(A, spikes(2))])
    report = compact(tmp_path, retention_hours=0)
    assert report["units"]["files_vacuumed"] == 1
    assert len(list((tmp_path / "tables" / "units").glob("*.parquet"))) == 1
    assert len(rows(tmp_path)) == 2


def test_foreign_files_in_the_table_folders_are_never_read(tmp_path):
    publish(tmp_path, [entry(A, spikes(2))])
    units = tmp_path / "tables" / "units"
    (units / "part-00000-foreign.parquet").write_bytes(b"not parquet at all")
    (units / "notes.txt").write_text("hello")
    (units / "_delta_log" / "README").write_text("hands off")
    (units / "_delta_log" / ".00000000000000000001.json.tmp").write_bytes(b"{half")
    (tmp_path / "tables" / "assets" / "junk.parquet").write_bytes(b"\x00" * 10)
    assert len(rows(tmp_path)) == 2
    assert set(assets_index(tmp_path)) == {A}
    publish(tmp_path, [entry(B, spikes(1))])
    assert len(rows(tmp_path)) == 3


def old_lake(root):
    """A lake in the Hive layout, written by the current writers."""
    from spikelab.io.lake import Lake

    lake = Lake(root)
    written = {}
    for key, sd, extra in (
        (A, spikes(3, seed=1, extra={"snr": 2.0}), {"etag": "e1"}),
        (B, spikes(2, seed=2, extra={"presence_ratio": 0.9}), {}),
    ):
        output = write_units_table(
            sd, lake.units_path(*key), source=key[0], dataset_id=key[1], asset_id=key[2]
        )
        raster = lake.raster_path(*key)
        storage.put_bytes(raster, b"png")
        write_manifest(
            lake.manifest_path(*key),
            source=key[0],
            dataset_id=key[1],
            asset_id=key[2],
            status="ok",
            input={"content_id": f"content-{key[2]}", **extra},
            outputs=[output, {"path": raster, "sha256": "x", "rows": None}],
            spikedata=spikedata_summary(sd),
            flow_run_id="old-run",
        )
        written[key] = sd
    failed = ("files", "local", "broken.nwb")
    write_manifest(
        lake.manifest_path(*failed),
        source=failed[0],
        dataset_id=failed[1],
        asset_id=failed[2],
        status="failed",
        error="OSError: truncated",
    )
    (root / "runs").mkdir()
    (root / "runs" / "run-1.json").write_text("{}")
    return lake, written, failed


def test_migrate_a_hive_lake(tmp_path):
    old = tmp_path / "old"
    lake, written, failed = old_lake(old)
    before = sorted(str(p) for p in old.rglob("*"))
    report = migrate(old, tmp_path / "new")
    assert report == {"assets": 3, "units": 5, "files_copied": 3}
    assert sorted(str(p) for p in old.rglob("*")) == before  # the old lake is untouched
    new = tmp_path / "new"
    index = assets_index(new)
    assert index[A] == AssetState("content-sub-1.nwb", None, "ok", 0, rows=3)
    assert index[B].content_id == "content-pid-1" and index[failed].status == "failed"
    connection = connect(new)
    for key, sd in written.items():
        found = connection.execute(
            "SELECT unit_id, spike_times_ms, location_label FROM units "
            "WHERE source = ? AND asset_id = ? ORDER BY unit_index",
            [key[0], key[2]],
        ).fetchall()
        assert [r[1] for r in found] == [t.tolist() for t in sd.train]
        assert [r[0] for r in found] == [str(a["unit_id"]) for a in sd.neuron_attributes]
        assert read_units_table(lake.units_path(*key)) == sd  # still readable the old way
    moved = read_manifest(str(new) + lake.manifest_path(*A)[len(str(old)) :])
    assert moved["table_version"] == 0 and moved["input"]["etag"] == "e1"
    assert moved["outputs"][0] == {"path": units_uri(new), "rows": 3}
    assert moved["outputs"][1]["path"].startswith(str(new))
    assert (new / "runs" / "run-1.json").read_text() == "{}"
    assert (new / moved["outputs"][1]["path"][len(str(new)) + 1 :]).read_bytes() == b"png"
    with pytest.raises(ValueError, match="different root"):
        migrate(old, old)


def test_history_lists_the_newest_versions_first(tmp_path):
    for index in range(3):
        publish(tmp_path, [entry(("files", "d", f"a{index}"), spikes(1))], flow_run_id=f"r{index}")
    assert [h["version"] for h in history(tmp_path)] == [2, 1, 0]
    assert [(h["version"], h["flow_run_id"]) for h in history(tmp_path, limit=2)] == [
        (2, "r2"),
        (1, "r1"),
    ]


def test_a_partitioned_table_written_by_another_engine_is_read_through_delta(tmp_path):
    from deltalake import write_deltalake

    units = entry(A, spikes(2)).units.replace_schema_metadata(None)
    write_deltalake(units_uri(tmp_path), units, partition_by=["source"])
    found = connect(tmp_path).execute("SELECT source, dataset_id, unit_id FROM units").fetchall()
    assert sorted(found) == [("dandi", "000001", "10"), ("dandi", "000001", "11")]


def test_s3_storage_options_ask_for_safe_commits(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert delta_lake.storage_options("s3://bucket/lake/tables/units") == {
        "conditional_put": "etag",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "eu-west-1",
    }
    assert delta_lake.storage_options("/data/lake/tables/units") is None


def test_tables_keep_their_log_as_long_as_their_replaced_files(tmp_path):
    publish(tmp_path, [entry(A, spikes(1))])
    for uri in (units_uri(tmp_path), delta_lake.assets_uri(tmp_path)):
        configuration = open_table(uri).metadata().configuration
        assert configuration == {
            "delta.logRetentionDuration": "interval 168 hours",
            "delta.deletedFileRetentionDuration": "interval 168 hours",
        }


def test_expired_log_files_are_cleaned_by_compaction_not_by_each_publish(tmp_path):
    """Publishing leaves the log to compaction (a cleanup per commit lists the whole log)."""
    for index in range(3):
        publish(tmp_path, [entry(A, spikes(1 + index))])
    log = tmp_path / "tables" / "units" / "_delta_log"
    open_table(units_uri(tmp_path)).create_checkpoint()  # versions before it may now go
    month_ago = time.time() - 30 * 24 * 3600
    old = sorted(path.name for path in log.glob("*.json"))
    for name in old:
        os.utime(log / name, (month_ago, month_ago))
    publish(tmp_path, [entry(B, spikes(2))])
    assert set(old) <= {path.name for path in log.glob("*.json")}
    compact(tmp_path)
    remaining = {path.name for path in log.glob("*.json")}
    assert not set(old[:-1]) & remaining  # the checkpoint's own version may stay
    assert rows(tmp_path) == rows(tmp_path, as_of=open_table(units_uri(tmp_path)).version())
    assert {key[:3] for key in rows(tmp_path)} == {A, B}


def test_a_writer_kept_open_sees_what_other_writers_committed(tmp_path):
    """A run's writer replaces an asset that another writer re-published meanwhile."""
    writer = delta_lake.LakeWriter(tmp_path)
    writer.publish([entry(A, spikes(1, seed=1))])
    publish(tmp_path, [entry(B, spikes(2, seed=2)), entry(A, spikes(3, seed=3))])
    version = writer.publish([entry(A, spikes(4, seed=4), content_id="c4")])
    units = connect(tmp_path).execute(
        "SELECT asset_id, count(*) FROM units GROUP BY asset_id ORDER BY asset_id"
    )
    assert sorted(units.fetchall()) == sorted([(A[2], 4), (B[2], 2)])
    assert assets_index(tmp_path)[A].content_id == "c4"
    assert assets_index(tmp_path)[A].version == version == 3  # a delete after each republish
    publish(tmp_path, [entry(("files", "d", "c"), spikes(1, extra={"quality": 0.5}))])
    with pytest.raises(LakeSchemaError, match="column 'attr_quality'.*holds double"):
        writer.publish([entry(B, spikes(1, extra={"quality": "good"}))])  # the new column seen


def test_a_long_lived_writer_reloads_its_tables_and_keeps_the_assets_files_few(
    tmp_path, monkeypatch
):
    """Past the limits a writer loads its tables afresh and bin-packs the assets table."""
    monkeypatch.setattr(delta_lake, "REOPEN_AFTER_VERSIONS", 3)
    monkeypatch.setattr(delta_lake, "ASSETS_FILES_LIMIT", 4)
    opened = []
    real_open = delta_lake.open_table
    monkeypatch.setattr(delta_lake, "open_table", lambda uri: opened.append(uri) or real_open(uri))
    writer = delta_lake.LakeWriter(tmp_path)
    keys = [("dandi", "000001", f"asset-{i:02d}") for i in range(12)]
    for i, key in enumerate(keys):
        writer.publish([entry(key, spikes(1 + i % 3, seed=i), content_id=f"c{i}")])
    writer.publish([entry(keys[0], spikes(5, seed=50), content_id="again")])  # a replacement

    assets = open_table(delta_lake.assets_uri(tmp_path))
    assert len(assets.file_uris()) <= 4 + 1
    index = assets_index(tmp_path)
    assert {key: index[key].content_id for key in keys} == {
        key: ("again" if i == 0 else f"c{i}") for i, key in enumerate(keys)
    }
    counts = dict(
        connect(tmp_path)
        .execute("SELECT asset_id, count(*) FROM units GROUP BY asset_id")
        .fetchall()
    )
    assert counts == {key[2]: (5 if i == 0 else 1 + i % 3) for i, key in enumerate(keys)}
    # 13 publications = 13 assets versions (+ compactions): loaded afresh several times
    assert opened.count(delta_lake.assets_uri(tmp_path)) >= 4


def test_bin_packing_leaves_assets_files_of_the_target_size_alone(tmp_path, monkeypatch):
    """Only the small assets files are rewritten: a packed file at the target stays."""
    monkeypatch.setattr(delta_lake, "ASSETS_FILES_LIMIT", 4)
    writer = delta_lake.LakeWriter(tmp_path)
    keys = [("dandi", "000001", f"asset-{i:03d}") for i in range(505)]
    uri = delta_lake.assets_uri(tmp_path)
    for start in range(0, 500, 100):  # the fifth file is one too many: all five packed
        batch = keys[start : start + 100]
        writer.publish([entry(key, spikes(1, seed=i)) for i, key in enumerate(batch)])
    (packed,) = open_table(uri).file_uris()  # over twice the size of a one-asset file
    monkeypatch.setattr(delta_lake, "ASSETS_FILE_TARGET_BYTES", os.path.getsize(packed))
    for key in keys[500:]:  # five one-asset files: packed in twos, the big one kept
        writer.publish([entry(key, spikes(1, seed=1))])
    files = open_table(uri).file_uris()
    assert packed in files and len(files) < 1 + 5
    assert sorted(assets_index(tmp_path)) == sorted(keys)


def test_a_writers_append_on_its_own_snapshot_takes_in_anothers_new_column(tmp_path):
    """The first try goes on the writer's snapshot; the column added meanwhile is kept."""
    writer = delta_lake.LakeWriter(tmp_path)
    writer.publish([entry(A, spikes(1, seed=1))])
    writer.publish([entry(("files", "d", "x"), spikes(1, seed=5))])  # the tables are held
    publish(tmp_path, [entry(B, spikes(2, seed=2, extra={"quality": 0.5}))])
    writer.publish([entry(("files", "d", "c"), spikes(1, seed=3))])
    writer.publish([entry(("files", "d", "e"), spikes(1, seed=4, extra={"quality": 1}))])
    found = connect(tmp_path).execute(
        "SELECT asset_id, attr_quality FROM units ORDER BY asset_id, unit_index"
    )
    assert found.fetchall() == [
        ("c", None),
        ("e", 1.0),
        ("pid-1", 0.5),
        ("pid-1", 0.5),
        ("sub-1.nwb", None),
        ("x", None),
    ]
    assert open_table(units_uri(tmp_path)).version() == 4


def test_a_writer_reads_each_assets_file_once_and_its_own_never(tmp_path, monkeypatch):
    """Owners come from the writer's index: only another writer's new files are read."""
    from spikelab.exceptions import LakeKeyConflictError
    from spikelab.io import delta_assets

    read = []
    real_read = storage.read_parquet
    monkeypatch.setattr(storage, "read_parquet", lambda *a: read.append(a[0]) or real_read(*a))
    monkeypatch.setattr(delta_assets, "published_rows", None)  # never read by key
    writer = delta_lake.LakeWriter(tmp_path)
    for i in range(4):
        writer.publish([entry(("files", "d", f"k{i}"), spikes(1))._replace(owner=f"in-{i}")])
    assert read == []  # every file is the writer's own
    publish(tmp_path, [entry(B, spikes(1))._replace(owner="elsewhere")])  # a writer of its own
    read.clear()
    mine = entry(B, spikes(2))._replace(owner="mine")
    with pytest.raises(LakeKeyConflictError, match="already holds elsewhere"):
        writer.publish([mine])
    assert len(read) == 1  # the other writer's file
    writer.publish([entry(("files", "d", "k0"), spikes(3))._replace(owner="in-0")])  # again
    two = [entry(("files", "d", f"k{i}"), spikes(1))._replace(owner=f"in-{i}") for i in (4, 5)]
    writer.publish(two)
    assert len(read) == 1  # the writer knew every file its own commits added
    writer.publish([two[0]])  # k4 again: delta-rs writes k5's row anew beside it
    with pytest.raises(LakeKeyConflictError, match="already holds in-5"):
        writer.publish([entry(("files", "d", "k5"), spikes(1))._replace(owner="in-9")])
    assert len(read) == 2  # that file, which the writer could not tell from its rows alone
    with pytest.raises(LakeKeyConflictError, match="already holds in-0"):
        writer.publish([entry(("files", "d", "k0"), spikes(1))._replace(owner="in-9")])
    assert len(read) == 2
    index = assets_index(tmp_path)
    assert sorted(key[2] for key in index) == ["k0", "k1", "k2", "k3", "k4", "k5", B[2]]
    assert index[("files", "d", "k0")].rows == 3
