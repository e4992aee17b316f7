"""A writer killed between its commit and its files: the journal lets a later run finish."""

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from publications import pending

from spikelab.flows._publish import Publisher
from spikelab.flows.files import ingest_files
from spikelab.io import publish_journal, storage
from spikelab.io.delta_lake import asset_records, assets_index, publish
from spikelab.io.lake import Lake
from spikelab.io.manifest import outputs_intact, put_manifest, read_manifest
from spikelab.io.publish_journal import JOURNAL_FOLDER, repair_stale, write_journal

KEY = ("files", "p", "a")

KILLED_WRITER = textwrap.dedent(
    """
    import logging, os, signal, sys

    from spikelab.flows._publish import Publisher
    from spikelab.io import publish_journal, storage
    from spikelab.io.lake import Lake
    from publications import pending

    put_bytes = storage.put_bytes

    def killed_at_the_raster(destination, data):
        if str(destination).endswith(".png"):  # the commit has landed: die before the files
            os.kill(os.getpid(), signal.SIGKILL)
        put_bytes(destination, data)

    storage.put_bytes = killed_at_the_raster
    lake = Lake(sys.argv[1])
    with Publisher(lake, "killed-run", logging.getLogger("killed")) as publisher:
        publisher.add(pending("a", b"raster of a"))
    """
)


def journals(lake):
    return storage.list_files(storage.join(lake.root, JOURNAL_FOLDER), ".json")


def age(paths, hours=2.0):
    then = time.time() - hours * 3600
    for path in paths:
        os.utime(path, (then, then))


def publish_with(lake, run, *pendings):
    with Publisher(lake, run, logging.getLogger("test"), max_delay_seconds=60) as publisher:
        for item in pendings:
            publisher.add(item)
    return publisher.outcomes()


@pytest.mark.usefixtures("prefect_harness")
def test_a_writer_killed_after_its_commit_is_finished_by_a_later_run(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    killed = subprocess.run(
        [sys.executable, str(script), lake.root],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert killed.returncode == -9, killed.stderr
    # the rows landed, the files did not: a re-run would skip the asset as current
    assert assets_index(lake.root)[KEY].status == "ok"
    assert not storage.exists(lake.manifest_path(*KEY))
    assert not storage.exists(lake.raster_path(*KEY))
    (journal,) = journals(lake)

    assert repair_stale(lake) == []  # young: it may be a commit going on now
    assert journals(lake) == [journal]

    age([journal])
    other = tmp_path / "other.h5"
    from spikelab.demo_data import write_hdf5

    write_hdf5(other, np.random.default_rng(5))
    summary = ingest_files([str(other)], lake=lake.root)  # any run's end finishes the work
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    record = asset_records(lake.root, [KEY])[KEY]
    manifest = read_manifest(lake.manifest_path(*KEY))
    assert manifest["asset_id"] == "a" and manifest["status"] == "ok"
    assert manifest["spikedata"]["N"] == 2
    assert manifest["table_version"] == record.version == assets_index(lake.root)[KEY].version
    assert manifest["outputs"][0] == {"table": "units", "version": record.version, "rows": 2}
    assert manifest["outputs"][1]["path"] == lake.raster_path(*KEY)
    assert Path(lake.raster_path(*KEY)).read_bytes() == b"raster of a"
    assert outputs_intact(manifest)
    assert journals(lake) == []


def test_a_finished_publisher_leaves_no_journal_even_when_a_batch_is_retried(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    publish_with(lake, "run-1", pending("a", b"a1"))
    # "good" cannot join the float column: the batch fails and is committed asset by asset
    outcomes = publish_with(lake, "run-2", pending("c", b"c1"), pending("b", b"b1", quality="good"))
    assert outcomes[("files", "p", "c")]["status"] == "ok"
    assert outcomes[("files", "p", "b")]["status"] == "failed"
    assert journals(lake) == []


def test_a_journal_that_cannot_be_written_fails_only_that_try(tmp_path, monkeypatch):
    from spikelab.flows import _publish

    lake = Lake(str(tmp_path / "lake"))
    calls = []

    def flaky(lake, rasters):
        calls.append(sorted(rasters))
        if len(calls) == 1:
            raise OSError("journals: connection reset")
        return write_journal(lake, rasters)

    monkeypatch.setattr(_publish, "write_journal", flaky)
    outcomes = publish_with(lake, "run-1", pending("a", b"a"), pending("b", b"b"))
    assert {key[2]: o["status"] for key, o in outcomes.items()} == {"a": "ok", "b": "ok"}
    assert [len(keys) for keys in calls] == [2, 1, 1]  # the batch, then each asset alone
    assert journals(lake) == []


def test_a_stale_journal_never_undoes_a_later_publication(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    key_b, key_c, key_d, key_e = (("files", "p", name) for name in "bcde")
    publish_with(lake, "run-1", pending("b", b"b, later"), pending("c", b"c, good"))
    later = read_manifest(lake.manifest_path(*key_b))
    publish_with(lake, "run-2", pending("e", b"e"))  # a writer that died only before the removal
    finished = read_manifest(lake.manifest_path(*key_e))
    # c then failed: its failure recorded, its rows removed, by a writer that died before its
    # raster went
    failure = {**read_manifest(lake.manifest_path(*key_c)), "status": "failed", "outputs": []}
    put_manifest(lake.manifest_path(*key_c), failure)
    publish(lake.root, [(key_c, None, failure)], flow_run_id="run-3")
    stale = write_journal(
        lake, {key_b: b"b, earlier", key_c: b"", key_d: b"d, never landed", key_e: b"e"}
    )
    unreadable = storage.join(lake.root, JOURNAL_FOLDER, "cut.json")
    storage.put_bytes(unreadable, b'{"assets": [')
    foreign = storage.join(lake.root, JOURNAL_FOLDER, "foreign.json")
    storage.put_bytes(foreign, b'{"assets": [{"key": [1, 2, 3], "raster": ""}]}')
    age([stale, unreadable, foreign])

    assert repair_stale(lake) == []
    assert read_manifest(lake.manifest_path(*key_b)) == later  # the later publication stays
    assert read_manifest(lake.manifest_path(*key_e)) == finished
    assert Path(lake.raster_path(*key_b)).read_bytes() == b"b, later"
    assert not storage.exists(lake.raster_path(*key_c))  # no rows: no raster
    assert not storage.exists(lake.manifest_path(*key_d))
    assert not storage.exists(lake.raster_path(*key_d))
    assert journals(lake) == []


def test_a_publication_landing_while_a_journal_is_repaired_is_kept(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    key_a, key_c = ("files", "p", "a"), ("files", "p", "c")
    publish_with(lake, "run-1", pending("a", b"a, first"))
    failure = {"status": "failed", "outputs": []}
    publish(lake.root, [(key_c, None, failure)], flow_run_id="run-1")
    read_by_the_repair = asset_records(lake.root, [key_a, key_c])  # then another run publishes
    publish_with(lake, "run-2", pending("a", b"a, second"), pending("c", b"c, second"))
    newer = {key: read_manifest(lake.manifest_path(*key)) for key in (key_a, key_c)}
    monkeypatch.setattr(publish_journal.delta_lake, "asset_records", lambda *_: read_by_the_repair)
    age([write_journal(lake, {key_a: b"a, first", key_c: b""})])

    assert repair_stale(lake) == []
    assert {key: read_manifest(lake.manifest_path(*key)) for key in (key_a, key_c)} == newer
    assert Path(lake.raster_path(*key_a)).read_bytes() == b"a, second"
    assert Path(lake.raster_path(*key_c)).read_bytes() == b"c, second"
    assert journals(lake) == []


def test_records_are_read_for_the_keys_asked_only(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    publish_with(lake, "run-1", pending("a", b"a"), pending("b", b"b"))
    other_dataset = ("files", "q", "a")
    records = asset_records(lake.root, [KEY, other_dataset])
    assert list(records) == [KEY]
    assert records[KEY].status == "ok" and records[KEY].version == 0
    digest = hashlib.sha256(b"a").hexdigest()
    assert [o.get("sha256") for o in records[KEY].manifest["outputs"]][1] == digest
    assert asset_records(tmp_path / "no-lake", [KEY]) == {}


def test_files_older_than_reads_the_age_of_local_and_s3_files(tmp_path, aws_env, empty_moto):
    empty_moto.create_bucket(Bucket="journals")
    for root in (str(tmp_path / "local"), "s3://journals/lake"):
        storage.put_bytes(storage.join(root, "j", "x.json"), b"{}")
        storage.put_bytes(storage.join(root, "j", "x.txt"), b"")
        assert storage.files_older_than(storage.join(root, "j"), ".json", 3600) == []
        assert storage.files_older_than(storage.join(root, "j"), ".json", -60) == [
            storage.join(root, "j", "x.json")
        ]


@pytest.mark.usefixtures("prefect_harness")
def test_a_repair_that_fails_is_logged_and_the_run_still_lands(tmp_path, monkeypatch, caplog):
    from spikelab.demo_data import write_hdf5
    from spikelab.flows import _runs

    def unreachable(lake):
        raise OSError(f"{lake.root}/journals: access denied")

    monkeypatch.setattr(_runs, "repair_stale", unreachable)
    source = write_hdf5(tmp_path / "spikes.h5", np.random.default_rng(5))
    summary = ingest_files([str(source)], lake=str(tmp_path / "lake"))
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert "could not finish a killed run's publications: OSError: " in caplog.text


def test_the_journal_is_written_beside_the_units_commit_and_removed_by_a_writer(
    tmp_path, monkeypatch
):
    """It is in before the assets commit; the publishing thread waits for neither."""
    import threading

    from spikelab.flows import _publish
    from spikelab.io.delta_lake import LakeWriter

    lake = Lake(str(tmp_path / "lake"))
    units_landed = threading.Event()
    seen = []  # (what, thread name, journals there)
    commit, commit_assets, remove = LakeWriter._commit, LakeWriter._commit_assets, storage.remove

    def units_commit(self, uri, *args):
        version = commit(self, uri, *args)
        if uri == self.lake.units_uri:
            units_landed.set()
        return version

    def assets_commit(self, *args):
        seen.append(("assets commit", threading.current_thread().name, len(journals(lake))))
        return commit_assets(self, *args)

    def journal_after_units(lake, rasters):
        seen.append(("units landed first", units_landed.wait(20), None))
        return write_journal(lake, rasters)

    def recorded_remove(location):
        if JOURNAL_FOLDER in str(location):
            seen.append(("journal removed", threading.current_thread().name, None))
        remove(location)

    monkeypatch.setattr(LakeWriter, "_commit", units_commit)
    monkeypatch.setattr(LakeWriter, "_commit_assets", assets_commit)
    monkeypatch.setattr(_publish, "write_journal", journal_after_units)
    monkeypatch.setattr(storage, "remove", recorded_remove)
    outcomes = publish_with(lake, "run-1", pending("a", b"a"), pending("b", b"b"))
    assert {key[2]: o["status"] for key, o in outcomes.items()} == {"a": "ok", "b": "ok"}
    assert [(what, str(name)[:24], n) for what, name, n in seen] == [
        ("units landed first", "True", None),  # the journal waited for the units commit
        ("assets commit", "spikelab-publisher", 1),  # and was in before the assets commit
        ("journal removed", "spikelab-publisher-write", None),
    ]
    assert journals(lake) == []
