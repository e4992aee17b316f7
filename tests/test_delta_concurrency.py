"""Several writer processes, and writers killed mid-publish, on one Delta lake."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from spikelab.io.delta_lake import assets_index, open_table, units_uri
from spikelab.io.delta_read import connect
from spikelab.io.delta_upkeep import compact

WRITER = textwrap.dedent(
    """
    import sys

    from spikelab.io.delta_lake import Publication, publish
    from spikelab.io.units_table import units_arrow_table
    from spikelab.spikedata import SpikeData

    lake, worker, round_, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    print("ready", flush=True)
    for name in names.split(","):
        n = 1 + (int(name[1:]) + round_) % 4
        sd = SpikeData(
            [[float(i), i + 0.5] for i in range(n)],
            length=10.0,
            neuron_attributes=[
                {"unit_id": i, "location_label": "CA1", "round": round_, "w_" + worker: 1.0}
                for i in range(n)
            ],
        )
        units = units_arrow_table(sd, source="files", dataset_id="d", asset_id=name)
        manifest = {"status": "ok", "input": {"content_id": f"{name}-{round_}"}}
        publish(lake, [Publication(("files", "d", name), units, manifest)], flow_run_id=worker)
    """
)


def expected_units(name, round_):
    return 1 + (int(name[1:]) + round_) % 4


@pytest.fixture
def writer(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)

    def start(lake, worker, names, round_=0):
        return subprocess.Popen(
            [sys.executable, str(script), str(lake), worker, str(round_), ",".join(names)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


def per_asset(lake):
    """Units, distinct rounds and distinct unit indexes of every asset in the table."""
    query = (
        "SELECT asset_id, count(*), count(DISTINCT round), count(DISTINCT unit_index), "
        "min(round) FROM units GROUP BY asset_id ORDER BY asset_id"
    )
    return {name: rest for name, *rest in connect(lake).execute(query).fetchall()}


def run_writers(writer, lake, plans):
    processes = [writer(lake, f"w{i}", names) for i, names in enumerate(plans)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err


def check_every_asset_once(lake, names):
    found = per_asset(lake)
    assert sorted(found) == sorted(names)
    for name, (units, rounds, indexes, round_) in found.items():
        assert (units, rounds, indexes, round_) == (expected_units(name, 0), 1, units, 0)
    index = assets_index(lake)
    assert sorted(key[2] for key in index) == sorted(names)
    assert all(state.status == "ok" and state.version is not None for state in index.values())


def test_concurrent_writer_processes_on_a_local_lake(tmp_path, writer):
    names = [f"a{i}" for i in range(14)]
    plans = [names[0:6], names[4:10], names[8:14]]  # neighbours share two assets
    run_writers(writer, tmp_path / "lake", plans)
    check_every_asset_once(tmp_path / "lake", names)
    columns = {row[0] for row in connect(tmp_path / "lake").execute("DESCRIBE units").fetchall()}
    assert {"w_w0", "w_w1", "w_w2"} <= columns  # every writer's schema change landed


def test_concurrent_writer_processes_on_s3(aws_env, empty_moto, writer):
    empty_moto.create_bucket(Bucket="lake-bucket")
    lake = "s3://lake-bucket/nightly"
    names = [f"a{i}" for i in range(7)]
    run_writers(writer, lake, [names[0:3], names[2:5], names[4:7]])
    check_every_asset_once(lake, names)
    assert compact(lake)["units"]["files_removed"] > 1
    check_every_asset_once(lake, names)


def test_writers_killed_at_random_points_leave_whole_assets(tmp_path, writer):
    lake = tmp_path / "lake"
    names = [f"a{i}" for i in range(8)]
    rng = random.Random(13)
    kills = 0
    for round_ in range(1, 15):
        process = writer(lake, "w0", names, round_)
        assert process.stdout.readline().strip() == "ready"
        # publishing the 8 assets takes about a second: kill somewhere inside it
        try:
            process.wait(timeout=rng.uniform(0.0, 0.8))
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.communicate()
        if open_table(units_uri(lake)) is None:
            continue  # killed before the first commit
        for name, (units, rounds, indexes, landed) in per_asset(lake).items():
            assert rounds == 1 and indexes == units == expected_units(name, landed)
        summary = connect(lake).execute("SELECT count(DISTINCT asset_id) FROM units").fetchone()
        assert summary[0] <= len(names)
    assert kills >= 10
    clean = tmp_path / "clean"
    for target in (lake, clean):
        process = writer(target, "w0", names, 0)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert per_asset(lake) == per_asset(clean)
    check_every_asset_once(lake, names)
    assert compact(lake, retention_hours=0)["units"]["files_removed"] > 0
    leftover = list((lake / "tables" / "units").glob("*.parquet"))
    assert len(leftover) == 1  # files of killed writers are vacuumed
    check_every_asset_once(lake, names)
