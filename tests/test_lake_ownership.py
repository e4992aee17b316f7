"""Two tables that always agree: key ownership decided in the commit, and unfinished publications.

Publishing appends units under a new publication id, then commits the assets rows that name
it (checking each key's owner on the very snapshot it commits against), then deletes the
rows it replaced. These tests race writers for one key, kill a writer between its units and
assets commits, and check what readers count meanwhile and what the repair leaves.
"""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spikelab.exceptions import LakeKeyConflictError
from spikelab.io import delta_lake, delta_upkeep
from spikelab.io.delta_lake import Publication, assets_index, open_table, publish, units_uri
from spikelab.io.delta_read import connect
from spikelab.io.lake import open_lake
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import summary_rows
from spikelab.spikedata import SpikeData

KEY = ("files", "A", "s.nwb")

# A writer that publishes KEY for one owner; both writers of a round wait for each other
# after reading their assets snapshot and before committing to it, so that both have read
# the key as free: only the commit itself can tell them apart.
RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from spikelab.exceptions import LakeKeyConflictError
    from spikelab.io import delta_lake
    from spikelab.io.units_table import units_arrow_table
    from spikelab.spikedata import SpikeData

    lake, owner, n, gate = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    rows = delta_lake._assets_rows
    waited = []

    def at_the_gate(*args, **kwargs):
        if not waited:  # the first attempt only: a retry must read the winner's row
            waited.append(1)
            (gate / owner.replace("/", "_")).touch()
            deadline = time.monotonic() + 60
            while len(list(gate.iterdir())) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            # Both have read the key as free. The y side commits a moment later, so that the
            # Delta log decides, not the store: moto's server checks If-None-Match and then
            # writes, so two puts of one log file in the same millisecond both pass (S3
            # itself does it atomically).
            if owner.startswith("y"):
                time.sleep(0.5)
        return rows(*args, **kwargs)

    delta_lake._assets_rows = at_the_gate
    sd = SpikeData([[float(i) + 1.0] for i in range(n)], length=10.0)
    units = units_arrow_table(sd, source="files", dataset_id="A", asset_id="s.nwb")
    manifest = {"status": "ok", "input": {"content_id": owner, "path": owner}}
    try:
        entry = delta_lake.Publication(("files", "A", "s.nwb"), units, manifest, owner)
        delta_lake.publish(lake, [entry])
    except LakeKeyConflictError as error:
        print("conflict", error, flush=True)
        sys.exit(1)
    print("landed", flush=True)
    """
)


def units_of(sd_units, owner):
    sd = SpikeData([[float(i) + 1.0] for i in range(sd_units)], length=10.0)
    units = units_arrow_table(sd, source=KEY[0], dataset_id=KEY[1], asset_id=KEY[2])
    return Publication(KEY, units, {"status": "ok", "input": {"content_id": owner}}, owner)


def visible(lake):
    return connect(lake).execute("SELECT count(*) FROM units").fetchone()[0]


def race(tmp_path, lake, rounds):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    for round_ in range(rounds):
        gate = tmp_path / f"gate-{round_}"
        gate.mkdir()
        # different inputs, different unit counts: x/A/s.nwb has 3 units, y/A/s.nwb 5
        racers = {
            owner: subprocess.Popen(
                [sys.executable, str(script), str(lake), owner, str(n), str(gate)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for owner, n in ((f"x{round_}/A/s.nwb", 3), (f"y{round_}/A/s.nwb", 5))
        }
        reports = {}
        for owner, process in racers.items():
            out, err = process.communicate(timeout=300)
            reports[owner] = (process.returncode, out.split(" ")[0].strip())
            assert process.returncode in (0, 1), err
        winners = [owner for owner, (code, said) in reports.items() if code == 0]
        assert len(winners) == 1, reports  # never both: one key, two inputs
        (loser,) = set(racers) - set(winners)
        assert reports[loser][1] == "conflict"
        # the lake holds exactly what the winner reported landed, and names its owner
        expected = 3 if winners[0].startswith("x") else 5
        assert visible(lake) == expected
        state = assets_index(lake)[KEY]
        assert state.content_id == winners[0]
        # the loser's appended rows are gone (it deletes what it could not publish)
        assert delta_upkeep.remove_unpublished(lake, older_than_seconds=0) == 0
        assert units_rows(lake) == expected
        for name in delta_lake.PUBLISHED_TABLES:
            delta_lake.LakeWriter(lake).delete(
                delta_lake.table_uri(lake, name),
                delta_lake.key_predicate(KEY),
                {"commit": "reset", "assets": 0},
                3,
            )
        assets = open_table(delta_lake.assets_uri(lake))
        assets.delete(delta_lake.key_predicate(KEY))  # the next round starts with a free key


def units_rows(lake):
    """Rows in the units table itself, published or not."""
    table = open_table(units_uri(lake))
    return 0 if table is None else table.to_pyarrow_table(columns=["asset_id"]).num_rows


def test_two_writers_of_one_key_never_both_land_local(tmp_path):
    race(tmp_path, tmp_path / "lake", rounds=5)


def test_two_writers_of_one_key_never_both_land_on_s3(tmp_path, aws_env, empty_moto):
    empty_moto.create_bucket(Bucket="race")
    race(tmp_path, "s3://race/lake", rounds=5)


def test_the_same_owner_publishes_again_and_another_is_refused(tmp_path):
    lake = tmp_path / "lake"
    publish(lake, [units_of(3, "x/A/s.nwb")])
    publish(lake, [units_of(4, "x/A/s.nwb")])  # a re-ingest of the same input
    assert visible(lake) == 4 == units_rows(lake)  # the replaced rows are deleted
    with pytest.raises(LakeKeyConflictError, match="already holds x/A/s.nwb; y/A/s.nwb"):
        publish(lake, [units_of(5, "y/A/s.nwb")])
    assert visible(lake) == 4 == units_rows(lake)
    publish(lake, [units_of(2, None)])  # no owner given: no check (DANDI and IBL keys)
    assert visible(lake) == 2


# A writer killed between its units commit and its assets commit.
KILLED = textwrap.dedent(
    """
    import os, signal, sys

    from spikelab.io import delta_lake
    from spikelab.io.units_table import units_arrow_table
    from spikelab.spikedata import SpikeData

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    delta_lake.LakeWriter._commit_assets = killed
    sd = SpikeData([[1.0], [2.0], [3.0], [4.0]], length=10.0)
    units = units_arrow_table(sd, source="files", dataset_id="A", asset_id="s.nwb")
    manifest = {"status": "ok", "input": {"content_id": "second"}}
    delta_lake.publish(sys.argv[1], [(("files", "A", "s.nwb"), units, manifest)])
    """
)


def kill_between_commits(tmp_path, lake):
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    done = subprocess.run(
        [sys.executable, str(script), str(lake)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -9, done.stderr


def test_a_kill_between_the_two_commits_is_never_counted_and_is_removed(tmp_path):
    lake = tmp_path / "lake"
    publish(lake, [units_of(2, None)])
    kill_between_commits(tmp_path, lake)
    assert units_rows(lake) == 6  # the killed writer's 4 rows are in the table...
    assert visible(lake) == 2  # ...but no reader counts them
    assert open_lake(lake).count_rows() == 2
    assert summary_rows(lake) == [("files", "A", 1, 2, 2, 0, 0)]
    assert assets_index(lake)[KEY].content_id is None
    assert delta_upkeep.remove_unpublished(lake) == 0  # young: it may be a writer going on
    assert units_rows(lake) == 6
    assert delta_upkeep.remove_unpublished(lake, older_than_seconds=0) == 1
    assert units_rows(lake) == 2 == visible(lake)


def test_a_kill_with_no_earlier_publication_leaves_no_orphans_after_compact(tmp_path):
    lake = tmp_path / "lake"
    kill_between_commits(tmp_path, lake)
    assert summary_rows(lake) == [] and visible(lake) == 0  # 0 assets, and 0 units too
    age_publications(lake)
    delta_upkeep.compact(lake)
    assert units_rows(lake) == 0


def age_publications(lake):
    """Make the table's unpublished rows look an hour old, as a later run would find them."""
    real = time.time

    delta_lake.time.time = lambda: real() + 2 * delta_upkeep.UNPUBLISHED_AFTER_SECONDS
    try:
        assert delta_upkeep.remove_unpublished(lake) >= 1
    finally:
        delta_lake.time.time = real


@pytest.mark.usefixtures("prefect_harness")
def test_a_later_run_over_other_inputs_removes_a_killed_runs_rows(tmp_path, monkeypatch):
    import numpy as np

    from spikelab.demo_data import write_hdf5
    from spikelab.flows import ingest_files

    lake = tmp_path / "lake"
    kill_between_commits(tmp_path, lake)
    assert units_rows(lake) == 4
    real = time.time
    monkeypatch.setattr(
        delta_lake.time, "time", lambda: real() + 2 * delta_upkeep.UNPUBLISHED_AFTER_SECONDS
    )
    other = tmp_path / "other.h5"
    write_hdf5(other, np.random.default_rng(5))
    summary = ingest_files([str(other)], lake=str(lake))
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    rows = connect(lake).execute("SELECT DISTINCT asset_id FROM units").fetchall()
    assert rows == [("other.h5",)]
    table = open_table(units_uri(lake)).to_pyarrow_table(columns=["asset_id"])
    assert set(table.column("asset_id").to_pylist()) == {"other.h5"}  # the orphans are gone
    assert sorted(key[2] for key in assets_index(lake)) == ["other.h5"]


def test_time_travel_reads_only_finished_publications(tmp_path):
    lake = tmp_path / "lake"
    publish(lake, [units_of(2, None)])
    kill_between_commits(tmp_path, lake)
    version = open_table(units_uri(lake)).version()
    assert connect(lake, as_of=version).execute("SELECT count(*) FROM units").fetchone() == (2,)
    assert Path(lake).exists() and os.listdir(Path(lake, "tables", "units"))


def write_units_file(path, n):
    """An HDF5 file of ``n`` units (the paired-arrays layout the files flow detects)."""
    import h5py
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle["idces"] = np.repeat(np.arange(n), 2).astype(np.int64)
        handle["times"] = np.tile([1.0, 2.0], n)
        handle.attrs["time_unit"] = "ms"
        handle.attrs["length_ms"] = 10.0
    return path


@pytest.mark.usefixtures("prefect_harness")
def test_two_ingest_runs_racing_for_the_same_keys_both_report_the_truth(tmp_path):
    """Two `ingest files` runs with the same file names, different contents, one lake."""
    from concurrent.futures import ThreadPoolExecutor

    from spikelab.flows import ingest_files, run_summary

    for round_ in range(3):
        lake = tmp_path / f"lake-{round_}"
        sides = {
            side: [str(write_units_file(tmp_path / f"{side}{round_}" / "A" / f"s{i}.h5", n))
                   for i in range(3)]
            for side, n in (("x", 3), ("y", 5))
        }  # fmt: skip
        with ThreadPoolExecutor(2) as pool:
            states = list(
                pool.map(
                    lambda paths, lake=lake: ingest_files(paths, lake=str(lake), return_state=True),
                    sides.values(),
                )
            )
        reported = {}  # key -> units, of every asset a run says landed
        for state in states:
            for asset in run_summary(state)["assets"]:
                key = (asset["dataset_id"], asset["asset_id"])
                if asset["status"] == "ok":
                    assert key not in reported, f"two runs say they published {key}"
                    reported[key] = asset["units"]
                else:
                    assert "already holds" in asset["error"]  # the loser says why
        rows = (
            connect(lake)
            .execute("SELECT dataset_id, asset_id, count(*) FROM units GROUP BY ALL")
            .fetchall()
        )
        assert {(d, a): n for d, a, n in rows} == reported  # nothing lost, nothing extra


def test_a_kill_between_the_two_commits_on_s3_is_hidden_then_removed(tmp_path, aws_env, empty_moto):
    empty_moto.create_bucket(Bucket="killed")
    lake = "s3://killed/lake"
    publish(lake, [units_of(2, None)])
    kill_between_commits(tmp_path, lake)
    assert units_rows(lake) == 6 and visible(lake) == 2
    assert summary_rows(lake) == [("files", "A", 1, 2, 2, 0, 0)]
    assert delta_upkeep.remove_unpublished(lake, older_than_seconds=0) == 1
    assert units_rows(lake) == 2 == visible(lake)
