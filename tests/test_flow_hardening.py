"""The files flow on hostile or careless inputs: colliding names, long and non-UTF-8 names,
pickles, failed runs, relative lakes, leftovers of killed runs, inputs that stop loading."""

import hashlib
import json
import logging
import os
import pathlib
import pickle
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
from publications import pending

from spikelab.exceptions import IngestFailedError, LakeKeyConflictError
from spikelab.flows import ingest_files, run_summary
from spikelab.flows._publish import Publisher
from spikelab.flows.files import assign_targets, check_key_is_mine
from spikelab.io.delta_lake import assets_index
from spikelab.io.delta_read import history
from spikelab.io.lake import (
    MAX_KEY_LENGTH,
    Lake,
    connect,
    default_lake,
    resolve_lake,
    safe_key,
)
from spikelab.io.manifest import (
    read_manifest,
    record_failure,
    write_manifest,
)
from spikelab.io.storage import put_bytes
from spikelab.loaders.formats import npz_holds_objects
from spikelab.spikedata import SpikeData
from spikelab.tasks.load import counted_warnings, staging_dir

pytestmark = pytest.mark.usefixtures("prefect_harness")

HOUR = 3600.0


def write_h5(path: Path, trains_s: list[list[float]]) -> Path:
    """A ragged-layout HDF5 spike file (times in seconds), one train per unit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle["spike_times"] = np.concatenate([np.asarray(t, float) for t in trains_s])
        handle["spike_times_index"] = np.cumsum([len(t) for t in trains_s])
        handle.attrs["time_unit"] = "s"
        handle.attrs["length_ms"] = 10_000.0
    return path


def run(paths, lake, **options):
    """Run the files flow; return (state, summary) whether it completed or failed."""
    state = ingest_files([str(p) for p in paths], lake=str(lake), return_state=True, **options)
    return state, run_summary(state)


def by_path(summary):
    return {
        read_manifest(a["manifest"])["input"]["path"]: a
        for a in summary["assets"]
        if a["status"] != "failed"
    }


def stored(lake, asset_id, column="spike_times_ms"):
    """One column of an asset's rows in the lake's units table, in unit order."""
    query = f"SELECT {column} FROM units WHERE asset_id = ? ORDER BY unit_index"
    values = [value for (value,) in connect(lake).execute(query, [asset_id]).fetchall()]
    return [list(v) for v in values] if column == "spike_times_ms" else values


def unit_counts(lake):
    query = "SELECT dataset_id, asset_id, count(*) FROM units GROUP BY ALL ORDER BY ALL"
    return connect(lake).execute(query).fetchall()


# --- 12.4: one lake key per input ---------------------------------------------------------


def test_inputs_with_the_same_folder_and_file_name_both_land(tmp_path):
    first = write_h5(tmp_path / "a" / "x" / "s.h5", [[0.5, 1.5], [2.0]])
    second = write_h5(tmp_path / "b" / "x" / "s.h5", [[0.25], [1.0], [3.0, 4.0]])
    lake = tmp_path / "lake"
    state, summary = run([first, second], lake)
    assert state.is_completed() and summary["counts"] == {"ok": 2, "skipped": 0, "failed": 0}
    assets = by_path(summary)
    # the first by path keeps the plain key; the other gets a hash of its path
    assert assets[str(first)]["asset_id"] == "s.h5"
    assert assets[str(second)]["asset_id"].startswith("s.h5-")
    assert len(assets[str(second)]["asset_id"]) == len("s.h5-") + 8
    counts = unit_counts(lake)
    assert counts == [("x", "s.h5", 2), ("x", assets[str(second)]["asset_id"], 3)]
    for path, trains in (
        (first, [[500.0, 1500.0], [2000.0]]),
        (second, [[250.0], [1000.0], [3000.0, 4000.0]]),
    ):
        manifest = read_manifest(assets[str(path)]["manifest"])
        assert manifest["outputs"][0] == {
            "table": "units",
            "version": manifest["table_version"],
            "rows": len(trains),
        }
        assert stored(lake, assets[str(path)]["asset_id"]) == trains

    # each input keeps its key: alone, in the other order, or beside a third of that name
    third = write_h5(tmp_path / "c" / "x" / "s.h5", [[9.0]])
    state, again = run([third, second, first], lake)
    assert again["counts"] == {"ok": 1, "skipped": 2, "failed": 0}
    keys = {path: a["asset_id"] for path, a in by_path(again).items()}
    assert keys[str(first)] == "s.h5" and keys[str(second)] == assets[str(second)]["asset_id"]
    assert keys[str(third)] not in ("s.h5", keys[str(second)])
    assert sum(n for *_, n in unit_counts(lake)) == 2 + 3 + 1


def test_a_later_run_never_takes_over_a_key_another_input_holds(tmp_path):
    first = write_h5(tmp_path / "a" / "x" / "s.h5", [[0.5]])
    second = write_h5(tmp_path / "b" / "x" / "s.h5", [[1.0], [2.0]])
    lake = tmp_path / "lake"
    run([second], lake)
    _, summary = run([first], lake)
    assert summary["assets"][0]["asset_id"].startswith("s.h5-")
    held = read_manifest(lake / "manifests" / "source=files" / "dataset=x" / "s.h5.json")
    assert held["input"]["path"] == str(second) and held["spikedata"]["N"] == 2


def test_a_key_held_by_another_input_is_refused_with_a_clear_error(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    target = {"source": "files", "dataset_id": "x", "asset_id": "s.h5"}
    path = Path(lake.root, "manifests", "source=files", "dataset=x", "s.h5.json")
    write_manifest(path, **target, status="ok", input={"path": "/data/a/x/s.h5"})
    check_key_is_mine(lake, target, "/data/a/x/s.h5")
    with pytest.raises(
        LakeKeyConflictError, match=r"x/s\.h5 already holds /data/a/x/s\.h5; /data/b"
    ):
        check_key_is_mine(lake, target, "/data/b/x/s.h5")
    path.write_text("{not json")  # names no input: the key is free
    check_key_is_mine(lake, target, "/data/b/x/s.h5")
    assert assign_targets(lake, [Path("/data/b/x/s.h5")]) == [target]


# --- 14: long names ------------------------------------------------------------------------


def test_safe_keys_are_cut_with_a_hash_near_the_name_limit():
    name = "n" * 246 + ".nwb"
    key = safe_key(name)
    assert len(key) == MAX_KEY_LENGTH and key.startswith("n" * 100)
    assert key != safe_key("n" * 245 + "m.nwb")  # cut names stay distinct
    assert safe_key("short.nwb") == "short.nwb" and safe_key(key) == key


def test_files_named_at_the_filesystem_limit_are_written_atomically(tmp_path):
    for name in ("a" * 255, "é" * 127 + "b"):  # 255 bytes, in one- and two-byte characters
        destination = tmp_path / name
        put_bytes(destination, b"whole")
        assert destination.read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a" * 255, "é" * 127 + "b"])


def test_an_input_named_near_the_filesystem_limit_lands(tmp_path):
    long_name = "r" * 247 + ".h5"
    assert len(long_name) == 250
    path = write_h5(tmp_path / "in" / long_name, [[0.1, 0.2], [0.3]])
    lake = tmp_path / "lake"
    state, summary = run([path], lake)
    assert state.is_completed(), summary
    manifest = read_manifest(summary["assets"][0]["manifest"])
    assert manifest["input"]["path"] == str(path) and manifest["spikedata"]["N"] == 2
    assert len(manifest["asset_id"]) == MAX_KEY_LENGTH
    assert unit_counts(lake) == [("in", manifest["asset_id"], 2)]


# --- 12.5: a run with a failed asset ends Failed, its summary and artifacts written --------


def test_a_run_whose_inputs_are_all_missing_ends_failed_with_its_summary(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    lake = tmp_path / "lake"
    missing = [tmp_path / "gone" / "one.nwb", tmp_path / "gone" / "two.h5"]
    state, summary = run(missing, lake)
    assert state.is_failed() and state.message == "0 loaded, 0 skipped, 2 failed"
    assert [a["error"] for a in summary["assets"]] == [
        f"FileNotFoundError: {missing[0]}: no such file or folder",
        f"FileNotFoundError: {missing[1]}: no such file or folder",
    ]
    written = json.loads((lake / "runs" / f"{summary['flow_run_id']}.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert str(state.state_details.flow_run_id) == summary["flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    assert {a.key: a.description for a in artifacts} == {
        "ingest-files-summary": "0 loaded, 0 skipped, 2 failed",
        "ingest-files-assets": "Per-asset outcomes of ingest-files",
    }
    with pytest.raises(IngestFailedError, match="0 loaded, 0 skipped, 2 failed") as raised:
        ingest_files([str(p) for p in missing], lake=str(lake))
    assert raised.value.summary["counts"] == {"ok": 0, "skipped": 0, "failed": 2}


def test_a_failure_logs_one_line_and_keeps_its_traceback_in_the_prefect_log(tmp_path, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler

    missing = tmp_path / "gone.h5"
    state, _ = run([missing], tmp_path / "lake")
    line = f"files/{tmp_path.name}/gone.h5 failed: FileNotFoundError: {missing}: no such file"
    records = [(r.name, r.exc_info is not None) for r in caplog.records if line in r.getMessage()]
    # the run logger's line (console and API) has no traceback; the API-only one has it
    assert records == [("prefect.task_runs", False), ("prefect.extra", True)]
    api_only = logging.getLogger("prefect.extra")
    assert not api_only.propagate
    kinds = {type(h) for h in api_only.handlers}
    assert APILogHandler in kinds and PrefectConsoleHandler not in kinds
    APILogHandler().flush()  # logs reach the API in batches: send them now
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    failures = [log.message for log in logs if line in log.message]
    assert (
        len(failures) == 2 and sum("Traceback (most recent call last)" in f for f in failures) == 1
    )


# --- 12.7: warnings counted per input, 12.1: skipped columns, 12.8: zero units -------------


def test_load_warnings_and_skipped_columns_are_recorded_per_input(tmp_path, caplog):
    sd = SpikeData(
        [np.array([1.0, 5.0]), np.array([2.0])],
        length=10.0,
        neuron_attributes=[{"location": "CA1", "snr": 1.5}, {"location": "CA3", "snr": 2.0}],
    )
    pickled = tmp_path / "in" / "regions.pkl"
    pickled.parent.mkdir()
    pickled.write_bytes(pickle.dumps(sd))
    empty = tmp_path / "in" / "empty.p"
    empty.write_bytes(pickle.dumps(SpikeData([], length=100.0)))
    lake = tmp_path / "lake"
    state, summary = run([pickled, empty], lake, trust_pickles=True)
    assert summary["counts"] == {"ok": 2, "skipped": 0, "failed": 0}
    assets = by_path(summary)

    manifest = read_manifest(assets[str(pickled)]["manifest"])
    assert manifest["warnings"] == {
        f"unpickling {pickled}: a pickle can run any code it holds, so load only pickles "
        "from sources you trust": 1
    }
    assert set(manifest["skipped_columns"]) == {"location"}
    assert "not coordinates" in manifest["skipped_columns"]["location"]
    assert stored(lake, "regions.pkl", "snr") == [1.5, 2.0]
    logged = [r.getMessage() for r in caplog.records if "while loading" in r.getMessage()]
    assert len(logged) == 2 and any(str(pickled) in line and "(x1)" in line for line in logged)

    nothing = read_manifest(assets[str(empty)]["manifest"])
    assert nothing["status"] == "ok" and nothing["spikedata"]["N"] == 0
    assert nothing["outputs"][0]["rows"] == 0
    assert stored(lake, "empty.p") == []
    assert unit_counts(lake) == [("in", "regions.pkl", 2)]


def test_warnings_are_counted_for_the_thread_that_raised_them():
    started = threading.Barrier(2)

    def load(tag: str, times: int) -> dict[str, int]:
        with counted_warnings() as counts:
            started.wait()
            for _ in range(times):
                warnings.warn(f"odd column in {tag}", UserWarning, stacklevel=1)
            started.wait()
        return dict(counts)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(load, ["a", "b"], [3, 1])
    assert first == {"odd column in a": 3} and second == {"odd column in b": 1}
    with pytest.raises(UserWarning, match="shown again"):  # pytest's error filter is back
        warnings.warn("shown again", UserWarning, stacklevel=1)


# --- 14: pickles run code, so they need trust ----------------------------------------------


class _Touch:
    """Unpickling this creates a file: proof that code from the data ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def write_npz(path: Path) -> Path:
    units = np.empty(1, dtype=object)
    units[0] = {"unit_id": 7, "spike_train": np.array([30, 60, 90])}
    np.savez(path, units=units, fs=np.array(30.0))
    return path


def test_pickles_and_object_npz_are_refused_unless_trusted(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    marker = tmp_path / "code-ran"
    evil = inputs / "evil.pickle"
    evil.write_bytes(pickle.dumps(_Touch(marker)))
    npz = write_npz(inputs / "sorted.npz")
    plain = write_h5(inputs / "fine.h5", [[0.5]])
    assert npz_holds_objects(npz) and not npz_holds_objects(plain)
    lake = tmp_path / "lake"

    state, summary = run([evil, npz, plain], lake)
    assert state.is_failed() and summary["counts"] == {"ok": 1, "skipped": 0, "failed": 2}
    errors = {a["asset_id"]: a["error"] for a in summary["assets"]}
    for name in ("evil.pickle", "sorted.npz"):
        assert errors[name] == (
            f"UntrustedPickleError: refusing to unpickle {inputs / name}: pickles can run code; "
            "pass --trust-pickles / trust_pickles=True if you trust it"
        )
    assert not marker.exists()

    state, summary = run([npz], lake, trust_pickles=True)
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert summary["assets"][0]["units"] == 1
    assert stored(lake, "sorted.npz") == [pytest.approx([1000.0, 2000.0, 3000.0])]


# --- 14: a name that is not UTF-8 fails alone ----------------------------------------------


def test_a_name_that_is_not_utf8_fails_alone_and_named(tmp_path):
    folder = tmp_path / "in"
    good = write_h5(folder / "good.h5", [[0.5], [0.7]])
    raw_name = os.fsencode(folder) + b"/caf\xe9.h5"
    bad = Path(os.fsdecode(raw_name))
    write_h5(bad, [[0.1]])
    lake = tmp_path / "lake"
    state, summary = run([bad.as_uri(), good], lake)
    assert state.is_failed() and summary["counts"] == {"ok": 1, "skipped": 0, "failed": 1}
    failed = next(a for a in summary["assets"] if a["status"] == "failed")
    shown = f"{folder}/caf\\xe9.h5"
    assert failed["error"] == (
        f"ValueError: {shown}: the file name is not valid UTF-8 ({raw_name!r}); spikelab "
        "records names as UTF-8 text: rename it (e.g. with convmv) and ingest it again"
    )
    assert read_manifest(failed["manifest"])["input"]["path"] == shown
    assert unit_counts(lake) == [("in", "good.h5", 2)]


# --- 14: nothing left behind -----------------------------------------------------------------


def planted(path: Path, age_seconds: float) -> Path:
    """A file last written ``age_seconds`` ago."""
    path.write_bytes(b"left by another run")
    then = time.time() - age_seconds
    os.utime(path, (then, then))
    return path


def test_stale_temporaries_and_staged_files_are_removed_fresh_ones_kept(tmp_path):
    lake = tmp_path / "lake"
    partition = lake / "manifests" / "source=files" / "dataset=in"
    partition.mkdir(parents=True)
    staged = staging_dir()
    stale_part = planted(partition / ".old.h5.parquet.0123456789ab.part", 2 * HOUR)
    fresh_part = planted(partition / ".busy.h5.parquet.ba9876543210.part", 0)
    not_ours = planted(partition / "notes.part", 2 * HOUR)  # not a temporary's name: kept
    stale_staged = planted(staged / "deadbeef.parquet", 2 * HOUR)
    fresh_staged = planted(staged / "cafebabe.parquet", 0)
    before = set(staged.iterdir())

    state, summary = run([write_h5(tmp_path / "in" / "s.h5", [[0.5]])], lake)
    assert state.is_completed()
    assert not stale_part.exists() and not stale_staged.exists()
    assert fresh_part.exists() and fresh_staged.exists() and not_ours.exists()
    # the run's own staged files went once published
    assert set(staged.iterdir()) <= before - {stale_staged}


# --- 14: a relative lake, the operator's default lake ----------------------------------------


def test_a_relative_lake_is_resolved_so_runs_from_elsewhere_skip(tmp_path, monkeypatch):
    source = write_h5(tmp_path / "in" / "s.h5", [[0.5], [0.6]])
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    state, summary = run([Path("in/s.h5")], "lake")
    assert summary["parameters"]["lake"] == str(tmp_path / "lake")
    manifest = read_manifest(summary["assets"][0]["manifest"])
    assert manifest["input"]["path"] == str(source)
    assert all(Path(o["path"]).is_absolute() for o in manifest["outputs"] if "path" in o)
    monkeypatch.chdir(tmp_path / "sub")
    state, again = run([source], "../lake")
    assert again["counts"] == {"ok": 0, "skipped": 1, "failed": 0}


def test_the_default_lake_comes_from_spikelab_lake(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPIKELAB_LAKE", raising=False)
    assert default_lake() == str(tmp_path / "spikelab-lake")
    monkeypatch.setenv("SPIKELAB_LAKE", "shared/lake")
    assert default_lake() == resolve_lake(None) == str(tmp_path / "shared" / "lake")
    assert resolve_lake("s3://bucket/lake/") == "s3://bucket/lake"
    source = write_h5(tmp_path / "in" / "s.h5", [[0.5]])
    state = ingest_files([str(source)], return_state=True)
    assert run_summary(state)["parameters"]["lake"] == str(tmp_path / "shared" / "lake")
    assert unit_counts(tmp_path / "shared" / "lake") == [("in", "s.h5", 1)]


# --- 14: a once-good input that fails keeps its last good publication -------------------------


def test_a_failure_after_a_good_load_keeps_the_good_publication(tmp_path):
    source = write_h5(tmp_path / "in" / "s.h5", [[0.5], [0.6], [0.7]])
    lake = tmp_path / "lake"
    _, good = run([source], lake)
    manifest_file = Path(good["assets"][0]["manifest"])
    published = read_manifest(manifest_file)

    source.write_bytes(b"no longer HDF5")
    state, failed = run([source], lake)
    assert state.is_failed()
    kept = read_manifest(manifest_file)
    assert kept["status"] == "ok" and kept["outputs"] == published["outputs"]
    assert kept["last_failure"]["error"] == failed["assets"][0]["error"]
    assert kept["last_failure"]["flow_run_id"] == failed["flow_run_id"]
    assert kept["last_failure"]["error"].startswith(
        f"FileFormatError: {source} is not a readable HDF5 file"
    )
    assert unit_counts(lake) == [("in", "s.h5", 3)]

    write_h5(source, [[0.1]])
    _, repaired = run([source], lake)
    assert repaired["counts"]["ok"] == 1
    fresh = read_manifest(manifest_file)
    assert "last_failure" not in fresh and fresh["spikedata"]["N"] == 1


def test_a_failure_over_replaced_outputs_drops_them_with_the_manifest(tmp_path):
    source = write_h5(tmp_path / "in" / "s.h5", [[0.5], [0.6]])
    lake = tmp_path / "lake"
    _, good = run([source], lake)
    manifest_file = Path(good["assets"][0]["manifest"])
    raster = Path(read_manifest(manifest_file)["outputs"][1]["path"])
    assert unit_counts(lake) == [("in", "s.h5", 2)]
    raster.write_bytes(raster.read_bytes() + b"!")  # an output the manifest does not describe
    source.write_bytes(b"broken")
    state, failed = run([source], lake)
    assert state.is_failed()
    assert read_manifest(manifest_file)["status"] == "failed"
    assert not raster.exists()
    assert unit_counts(lake) == []  # the asset's rows went with a delete commit
    assert assets_index(lake)[("files", "in", "s.h5")].status == "failed"


def test_record_failure_beside_a_good_manifest_or_as_a_failed_one(tmp_path):
    target = {"source": "files", "dataset_id": "d", "asset_id": "a"}
    table = tmp_path / "a.parquet"
    table.write_bytes(b"units")
    sha = hashlib.sha256(b"units").hexdigest()
    path = tmp_path / "a.json"
    write_manifest(path, **target, status="ok", outputs=[{"path": str(table), "sha256": sha}])
    kept = record_failure(path, **target, error="ValueError: bad", warnings={"w": 2})
    assert kept["status"] == "ok" and kept["last_failure"]["warnings"] == {"w": 2}
    table.write_bytes(b"other units")
    replaced = record_failure(path, **target, error="ValueError: worse")
    assert replaced["status"] == "failed" and replaced["error"] == "ValueError: worse"
    assert read_manifest(path) == replaced


# --- 13: the publisher batches commits, and one asset that cannot be published fails alone ----


def test_the_publisher_commits_a_batch_at_once_and_isolates_a_bad_asset(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    logger = logging.getLogger("test-publisher")
    with Publisher(lake, "run-1", logger, batch_size=3, max_delay_seconds=60) as publisher:
        for name in ("a", "b", "c"):
            publisher.add(pending(name))
    assert [entry["version"] for entry in history(lake.root)] == [0]  # one commit for three
    first = publisher.outcomes()
    assert {key[2]: o["status"] for key, o in first.items()} == {"a": "ok", "b": "ok", "c": "ok"}
    manifest = read_manifest(first[("files", "p", "a")]["manifest"])
    assert manifest["outputs"][0] == {"table": "units", "version": 0, "rows": 2}
    assert Path(manifest["outputs"][1]["path"]).read_bytes() == b"\x89PNG raster"

    # "good" cannot join the float column: that batch fails, and is committed asset by asset
    with Publisher(lake, "run-2", logger, batch_size=3, max_delay_seconds=60) as publisher:
        for name, quality in (("d", 0.25), ("a", "good"), ("e", 0.75)):
            publisher.add(pending(name, quality=quality))
    second = publisher.outcomes()
    assert {key[2]: o["status"] for key, o in second.items()} == {
        "d": "ok",
        "a": "failed",
        "e": "ok",
    }
    assert second[("files", "p", "a")]["error"].startswith("LakeSchemaError: column 'attr_quality'")
    # a's last good publication stays (its raster is intact), with the failure noted
    kept = read_manifest(second[("files", "p", "a")]["manifest"])
    assert kept["status"] == "ok" and kept["last_failure"]["flow_run_id"] == "run-2"
    assert unit_counts(lake.root) == [("p", name, 2) for name in "abcde"]


def test_the_publisher_lets_an_assets_rows_and_raster_go_once_they_are_in(tmp_path):
    """A finished Prefect future may hold the publication; its table must not stay with it."""
    import weakref

    lake = Lake(str(tmp_path / "lake"))
    held = [pending(name) for name in ("a", "b")]  # as the tasks' futures hold them
    tables = [weakref.ref(p["units"]) for p in held]
    with Publisher(lake, "run-1", logging.getLogger("test"), max_delay_seconds=60) as publisher:
        for publication in held:
            publisher.add(publication)
    statuses = {key[2]: o["status"] for key, o in publisher.outcomes().items()}
    assert statuses == {"a": "ok", "b": "ok"}
    assert [(p["units"], p["raster"]) for p in held] == [(None, None)] * 2
    assert [table() for table in tables] == [None, None]  # nothing else kept them
    assert unit_counts(lake.root) == [("p", "a", 2), ("p", "b", 2)]


def test_a_files_run_holds_no_inputs_rows_once_they_are_published(tmp_path, monkeypatch):
    """However many inputs a run has, their units tables are not all kept to its end."""
    import gc
    import weakref

    from spikelab.flows import files

    tables: list[weakref.ref] = []
    alive_after_publishing: list[int] = []
    prepare, forget = files.prepare_publication, files.forget_earlier_failures

    def prepare_publication(*args, **kwargs):
        pending = prepare(*args, **kwargs)
        tables.append(weakref.ref(pending["units"]))
        return pending

    def forget_earlier_failures(*args):  # the flow's next step once everything is published
        gc.collect()
        alive_after_publishing.append(sum(table() is not None for table in tables))
        return forget(*args)

    monkeypatch.setattr(files, "prepare_publication", prepare_publication)
    monkeypatch.setattr(files, "forget_earlier_failures", forget_earlier_failures)
    paths = [write_h5(tmp_path / f"in-{i}.h5", [[0.5, 1.0 + i], [2.0]]) for i in range(3)]
    state, summary = run(paths, tmp_path / "lake")
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert len(tables) == 3 and alive_after_publishing == [0]
    assert stored(tmp_path / "lake", by_path(summary)[str(paths[2])]["asset_id"]) == [
        [500.0, 3000.0],
        [2000.0],
    ]


def test_the_publisher_commits_after_its_delay_without_waiting_for_a_batch(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with Publisher(
        lake, "run-1", logging.getLogger("test"), batch_size=100, max_delay_seconds=0.2
    ) as publisher:
        publisher.add(pending("a", quality=1.0))
        deadline = time.monotonic() + 20
        while not publisher.outcomes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(publisher.outcomes()) == [("files", "p", "a")]  # before the close


def test_two_overlapping_runs_into_one_lake_lose_and_double_nothing(tmp_path):
    from spikelab.demo_data import write_demo_dataset
    from spikelab.io.lake import connect
    from spikelab.loaders import load_spikedata_from_nwb

    nwb, kilosort, hdf5 = write_demo_dataset(tmp_path / "demo")
    lake = str(tmp_path / "lake")
    runs = [[str(nwb), str(kilosort)], [str(kilosort), str(hdf5), str(nwb)]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        summaries = list(pool.map(lambda paths: ingest_files(paths, lake=lake), runs))
    assert [s["counts"]["failed"] for s in summaries] == [0, 0]
    rows = dict(
        connect(lake).execute("SELECT asset_id, count(*) FROM units GROUP BY asset_id").fetchall()
    )
    index = assets_index(lake)
    assert sorted(key[2] for key in index) == sorted(rows) and len(rows) == 3
    assert all(state.status == "ok" for state in index.values())
    assert rows["session.nwb"] == load_spikedata_from_nwb(nwb).N
    # What the two runs loaded, each asset once: a re-run finds every one unchanged.
    again = ingest_files([str(nwb), str(kilosort), str(hdf5)], lake=lake)
    assert again["counts"] == {"ok": 0, "skipped": 3, "failed": 0}
    assert (
        dict(
            connect(lake)
            .execute("SELECT asset_id, count(*) FROM units GROUP BY asset_id")
            .fetchall()
        )
        == rows
    )


def test_the_table_artifact_lists_failed_assets_first_and_leaves_unchanged_ones_out(monkeypatch):
    from spikelab.flows import _runs

    monkeypatch.setattr(_runs, "ARTIFACT_ROWS", 3)

    def result(asset_id, status, error=None):
        return {"asset_id": asset_id, "status": status, "error": error}

    outcomes = [
        result("same", "skipped"),
        result("new-1", "ok"),
        result("zarr", "skipped", "zarr asset: stored as Zarr"),
        result("broken", "failed", "FileFormatError: x"),
        result("new-2", "ok"),
    ]
    rows = _runs.artifact_rows(outcomes)
    assert [row["asset_id"] for row in rows] == ["broken", "new-1", "zarr"]


@pytest.mark.parametrize("assets", [[], [{"asset_id": "a", "error": "x: []"}, {"asset_id": "ü"}]])
def test_the_run_summary_file_is_its_json_with_one_asset_a_line(assets):
    from spikelab.flows._runs import summary_json

    summary = {
        "assets": assets,  # not last: the file lists the assets after the rest all the same
        "flow": "ingest-files",
        "parameters": {"paths": ["[]", "b"], "glob": None},
        "counts": {"ok": 1, "skipped": 0, "failed": 1},
    }
    text = summary_json(summary).decode()
    assert json.loads(text) == summary
    lines = text.splitlines()
    assert [json.loads(line.rstrip(",")) for line in lines if line.startswith("    {")] == assets
    assert lines[-2:] == (["  ]", "}"] if assets else ['  "assets": []', "}"])
