"""``spikelab lake …`` over the Delta tables: summary, units, time travel, history,
compaction and migration from the Hive layout.

Test lakes are built with ``spikelab.io.delta_lake.publish`` directly, so these tests do not
depend on the ingest flows.
"""

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from spikelab import cli
from spikelab.cli import run
from spikelab.io import delta_lake, export_spikedata_to_nwb
from spikelab.io.delta_lake import Publication, assets_index, publish
from spikelab.io.delta_read import history
from spikelab.io.lake import Lake
from spikelab.io.manifest import write_manifest
from spikelab.io.units_table import units_arrow_table, write_units_table
from spikelab.lake_queries import find_units, history_rows, lake_summary, summary_rows
from spikelab.spikedata import SpikeData


def spikes(regions, trains=None, length=1000.0):
    trains = trains or [[float(10 * i + 1)] * 1 for i in range(len(regions))]
    attributes = [
        {"unit_id": 100 + i} | ({"location_label": r} if r else {}) for i, r in enumerate(regions)
    ]
    return SpikeData(trains, length=length, neuron_attributes=attributes)


def entry(source, dataset, asset, sd, status="ok", **extra):
    units = units_arrow_table(sd, source=source, dataset_id=dataset, asset_id=asset)
    manifest = {"status": status, "input": {"content_id": f"c-{asset}"}, **extra}
    return Publication((source, dataset, asset), units, manifest)


def failed(source, dataset, asset, status="failed"):
    return Publication((source, dataset, asset), None, {"status": status, "error": "bad"})


@pytest.fixture
def lake(tmp_path):
    """Three versions: two assets; one more plus a failed and a skipped one; a re-ingest."""
    root = str(tmp_path / "lake")
    publish(
        root,
        [
            entry("dandi", "000001", "a", spikes(["CA1", "DG"], [[1.0, 2.0], [3.0]])),
            entry("ibl", "eid", "p", spikes(["CA1", None, "MOs"], [[5.0], [], [6.0, 7.0]])),
        ],
        flow_run_id="run-1",
    )
    publish(
        root,
        [
            entry("files", "x", "f", SpikeData([], length=5.0)),  # loaded, no units
            failed("files", "x", "broken"),
            failed("dandi", "000001", "zarr", status="skipped"),
        ],
        flow_run_id="run-2",
    )
    publish(  # a re-ingest of "a": its rows are replaced, not added
        root,
        [entry("dandi", "000001", "a", spikes(["CA1", "CA1", "CA3"], [[1.0], [2.0], [3.0]]))],
        flow_run_id="run-3",
    )
    # as-of-a-time tests read these recorded commit times back from `lake history`: one
    # time per version, no two alike
    times = [item["timestamp"] for item in history(root)]
    assert times == sorted(set(times), reverse=True)
    return root


def lines(text):
    return [line.split() for line in text.splitlines()]


def test_summary_counts_come_from_the_assets_and_units_tables(lake, capsys):
    assert summary_rows(lake) == [
        ("dandi", "000001", 1, 3, 3, 0, 1),
        ("files", "x", 1, 0, 0, 1, 0),
        ("ibl", "eid", 1, 3, 3, 0, 0),
    ]
    assert run(["lake", "summary", "--lake", lake]) == 0
    assert lines(capsys.readouterr().out) == [
        ["source", "dataset", "assets", "units", "spikes", "failed", "skipped"],
        ["dandi", "000001", "1", "3", "3", "0", "1"],
        ["files", "x", "1", "0", "0", "1", "0"],
        ["ibl", "eid", "1", "3", "3", "0", "0"],
    ]
    assert lake_summary(lake)["units"].tolist() == [3, 0, 3]


def test_summary_as_of_an_older_version(lake, capsys):
    # Version 0 of units: the first commit (a and p); the assets table as it was then.
    assert summary_rows(lake, as_of=0) == [
        ("dandi", "000001", 1, 2, 3, 0, 0),
        ("ibl", "eid", 1, 3, 3, 0, 0),
    ]
    assert run(["lake", "summary", "--as-of", "1", "--lake", lake]) == 0
    rows = lines(capsys.readouterr().out)
    assert ["files", "x", "1", "0", "0", "1", "0"] in rows
    assert ["dandi", "000001", "1", "2", "3", "0", "1"] in rows


def test_summary_as_of_leaves_out_later_failures(lake):
    publish(lake, [failed("files", "x", "late")])  # an assets commit, no units commit
    assert summary_rows(lake)[1] == ("files", "x", 1, 0, 0, 2, 0)
    assert summary_rows(lake, as_of=2)[1] == ("files", "x", 1, 0, 0, 1, 0)
    assert summary_rows(lake, as_of=datetime.now(UTC))[1] == ("files", "x", 1, 0, 0, 2, 0)


def test_units_table_csv_and_filters(lake, capfd):
    assert run(["lake", "units", "--region", "CA1", "--lake", lake]) == 0
    out = lines(capfd.readouterr().out)
    assert out[0][:4] == ["source", "dataset_id", "asset_id", "unit_id"]
    assert [row[:4] for row in out[1:]] == [
        ["dandi", "000001", "a", "100"],
        ["dandi", "000001", "a", "101"],
        ["ibl", "eid", "p", "100"],
    ]
    argv = ["lake", "units", "--source", "ibl", "--min-rate", "1.5", "--format", "csv"]
    assert run([*argv, "--lake", lake]) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert frame["unit_id"].tolist() == [102]  # 2 spikes in 1 s: 2 Hz; the others 1 Hz or 0
    assert frame["firing_rate_hz"].tolist() == [2.0]
    assert run(["lake", "units", "--dataset", "000001", "--region", "DG", "--lake", lake]) == 0
    assert capfd.readouterr().out == "no matching units\n"


def test_units_as_of_a_version_or_a_time(lake, capfd, tmp_path):
    out = tmp_path / "old.parquet"
    argv = ["lake", "units", "--source", "dandi", "--as-of", "0", "--lake", lake]
    assert run([*argv, "--format", "parquet", "--output", str(out)]) == 0
    old = pd.read_parquet(out)
    assert old["location_label"].tolist() == ["CA1", "DG"]  # before the re-ingest
    assert find_units(lake, source="dandi")["location_label"].tolist() == ["CA1", "CA1", "CA3"]
    capfd.readouterr()
    when = {row[0]: row[1] for row in lines(_history(lake, capfd))[1:]}  # version -> time
    assert run([*argv[:-4], "--as-of", when["1"], "--format", "csv", "--lake", lake]) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert frame["location_label"].tolist() == ["CA1", "DG"]  # version 1, not 2
    assert run([*argv[:-4], "--as-of", when["2"], "--format", "csv", "--lake", lake]) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert frame["location_label"].tolist() == ["CA1", "CA1", "CA3"]
    as_of = datetime.fromisoformat(when["1"]).astimezone(UTC)
    assert find_units(lake, as_of=as_of)["asset_id"].tolist() == ["a", "a", "p", "p", "p"]


def _history(lake, capfd):
    assert run(["lake", "history", "--lake", lake]) == 0
    return capfd.readouterr().out


@pytest.mark.parametrize("as_of", ["7", "2000-01-01T00:00:00Z", "yesterday"])
def test_a_bad_as_of_is_a_usage_error(lake, as_of, capsys):
    assert run(["lake", "units", "--as-of", as_of, "--lake", lake]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        "versions 0 to 3" if as_of == "7" else "lake history" if as_of[0] == "2" else "ISO"
    ) in err


def test_history_lists_versions_runs_and_asset_counts(lake, capfd):
    rows = lines(_history(lake, capfd))
    assert rows[0] == ["version", "timestamp", "operation", "flow_run_id", "assets", "readable"]
    assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows[1:]] == [
        ("3", "DELETE", "run-3", "1", "yes"),  # the rows run-3's publication replaced
        ("2", "WRITE", "run-3", "1", "yes"),
        ("1", "WRITE", "run-2", "3", "yes"),
        ("0", "WRITE", "run-1", "2", "yes"),
    ]
    assert run(["lake", "history", "--limit", "1", "--lake", lake]) == 0
    assert len(lines(capfd.readouterr().out)) == 2


def test_compact_merges_files_and_keeps_the_answers(lake, capsys):
    publish(lake, [entry("dandi", "000002", "d", spikes(["CA1"], [[8.0]]))])
    before = find_units(lake)
    assert len(before) == 7
    assert run(["lake", "compact", "--retention-hours", "0", "--lake", lake]) == 0
    out = capsys.readouterr().out
    assert "units: 3 files merged into 1, " in out and "assets: " in out
    parts = [p for p in os.listdir(Path(lake, "tables", "units")) if p.endswith(".parquet")]
    assert len(parts) == 1  # retention 0: the files the compaction replaced are gone
    pd.testing.assert_frame_equal(find_units(lake), before)
    assert summary_rows(lake)[:2] == [
        ("dandi", "000001", 1, 3, 3, 0, 1),
        ("dandi", "000002", 1, 1, 1, 0, 0),
    ]
    operations = [row[2] for row in history_rows(lake)]
    assert operations[-6:] == ["OPTIMIZE", "WRITE", "DELETE", "WRITE", "WRITE", "WRITE"]


def test_compact_default_retention_matches_the_library():
    assert cli.DEFAULT_RETENTION_HOURS == delta_lake.DEFAULT_RETENTION_HOURS


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_an_empty_lake(tmp_path, capsys, state):
    lake = tmp_path / "lake"
    if state == "empty":
        lake.mkdir()
    for question, answer in [
        ("summary", "the lake is empty"),
        ("units", "no matching units"),
        ("history", "the lake has no versions yet"),
        ("compact", "the lake is empty: nothing to compact"),
    ]:
        assert run(["lake", question, "--lake", str(lake)]) == 0
        captured = capsys.readouterr()
        assert captured.out == answer + "\n"
        assert ("no lake at" in captured.err) == (state == "missing")


def old_lake(root: Path) -> Lake:
    """A lake written by the old code path: a Parquet file and a manifest per asset."""
    lake = Lake(root)
    for dataset, asset, sd in [
        ("x", "a", spikes(["CA1", "DG"], [[1.0, 2.0], [3.0]])),
        ("x", "b", spikes(["CA1"], [[4.0]])),
        ("y", "c", SpikeData([], length=3.0)),
    ]:
        out = write_units_table(
            sd,
            lake.units_path("files", dataset, asset),
            source="files",
            dataset_id=dataset,
            asset_id=asset,
        )
        write_manifest(
            lake.manifest_path("files", dataset, asset),
            source="files",
            dataset_id=dataset,
            asset_id=asset,
            status="ok",
            input={"content_id": f"c-{asset}"},
            outputs=[out],
            spikedata={"N": sd.N, "total_spikes": sum(len(t) for t in sd.train)},
        )
    write_manifest(
        lake.manifest_path("files", "x", "broken"),
        source="files",
        dataset_id="x",
        asset_id="broken",
        status="failed",
        error="ValueError: bad",
    )
    return lake


def test_migrate_converts_an_old_lake_and_keeps_it(tmp_path, capsys):
    old = old_lake(tmp_path / "old")
    before = sorted(str(p) for p in Path(old.root).rglob("*"))
    new = tmp_path / "new"
    assert run(["lake", "migrate", old.root, str(new)]) == 0
    assert capsys.readouterr().out.startswith("4 assets, 3 units and ")
    assert sorted(str(p) for p in Path(old.root).rglob("*")) == before  # nothing removed
    assert summary_rows(new) == [("files", "x", 2, 3, 4, 1, 0), ("files", "y", 1, 0, 0, 0, 0)]
    units = find_units(new, regions=["CA1"])
    assert units[["asset_id", "unit_id"]].values.tolist() == [["a", "100"], ["b", "100"]]
    index = assets_index(new)
    assert (
        index[("files", "x", "b")].content_id == "c-b" and index[("files", "x", "b")].version == 0
    )
    assert index[("files", "x", "broken")].status == "failed"
    copied = json.loads(Path(new, "manifests", "source=files", "dataset=x", "a.json").read_text())
    assert copied["table_version"] == 0
    assert run(["lake", "migrate", old.root, str(new)]) == 2  # the new root is taken now
    assert "already holds" in capsys.readouterr().err


def test_migrate_refuses_a_lake_that_is_already_delta(lake, tmp_path, capsys):
    assert run(["lake", "migrate", lake, str(tmp_path / "new")]) == 2
    assert "already a lake of Delta tables" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_migrate_refuses_a_root_without_an_old_lake(tmp_path, capsys):
    assert run(["lake", "migrate", str(tmp_path / "nothing"), str(tmp_path / "new")]) == 2
    assert "holds no units/ or manifests/" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


README = Path(__file__).parents[1] / "README.md"


def readme_queries() -> list[str]:
    """The Python blocks of README's lake section: one CA1 query per engine."""
    text = README.read_text()
    section = text[text.index("## The lake") : text.index("## Test your own flows offline")]
    return [
        block.split("\n", 1)[1]
        for block in section.split("```")[1::2]
        if block.startswith("python")
    ]


@pytest.mark.parametrize("engine", ["duckdb", "polars", "deltalake"])
def test_readme_queries_give_the_same_ca1_units(lake, engine, tmp_path, monkeypatch):
    marker = {"duckdb": "import connect", "polars": "import polars", "deltalake": "DeltaTable"}
    (code,) = [block for block in readme_queries() if marker[engine] in block]
    if engine == "polars":
        pytest.importorskip("polars")
    monkeypatch.chdir(tmp_path)  # the README's lake is ./spikelab-lake
    os.rename(lake, tmp_path / "spikelab-lake")
    namespace: dict = {}
    exec(compile(code, f"README.md ({engine})", "exec"), namespace)
    ca1 = namespace["ca1"]
    frame = ca1 if isinstance(ca1, pd.DataFrame) else ca1.to_pandas()
    found = sorted(zip(frame["asset_id"], frame["unit_id"], strict=True))
    assert found == [("a", "100"), ("a", "101"), ("p", "100")]


@pytest.mark.parametrize(
    "argv",
    [
        ["lake", "summary", "--as-of", "0"],
        ["lake", "history"],
        ["lake", "compact"],
        ["lake", "units", "--as-of", "1", "--format", "csv"],
    ],
    ids=" ".join,
)
def test_new_lake_commands_stay_light(lake, argv):
    probe = (
        "import sys\nfrom spikelab.cli import run\n"
        f"status = run({[*argv, '--lake', lake]!r})\n"
        "heavy = {'prefect', 'pynwb', 'spikeinterface', 'matplotlib'}\n"
        "print('HEAVY=' + ','.join(sorted({m.split('.')[0] for m in sys.modules} & heavy)))\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "HEAVY="


def test_lake_commands_on_s3(aws_env, empty_moto, capfd):
    empty_moto.create_bucket(Bucket="lake-bucket")
    lake = "s3://lake-bucket/prefix"
    publish(lake, [entry("dandi", "000001", "a", spikes(["CA1", "DG"], [[1.0, 2.0], [3.0]]))])
    publish(lake, [entry("ibl", "eid", "p", spikes(["CA1"], [[5.0]])), failed("ibl", "eid", "q")])
    assert summary_rows(lake) == [
        ("dandi", "000001", 1, 2, 3, 0, 0),
        ("ibl", "eid", 1, 1, 1, 1, 0),
    ]
    assert summary_rows(lake, as_of=0) == [("dandi", "000001", 1, 2, 3, 0, 0)]
    argv = ["lake", "units", "--region", "CA1", "--format", "csv", "--lake", lake]
    assert run(argv) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert frame["asset_id"].tolist() == ["a", "p"]
    assert run([*argv, "--as-of", "0"]) == 0
    assert pd.read_csv(io.StringIO(capfd.readouterr().out))["asset_id"].tolist() == ["a"]
    assert [row[0] for row in history_rows(lake)] == [1, 0]


def test_readme_offline_example_ingests_from_the_stand_in(tmp_path):
    text = README.read_text()
    section = text[text.index("## Test your own flows offline") : text.index("## Deploy")]
    (code,) = [b.split("\n", 1)[1] for b in section.split("```")[1::2] if b.startswith("python")]
    sd = SpikeData([[1.0, 2.0], [3.0]], length=5.0)
    subject = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}
    sd.metadata.update({"identifier": "units", "sampling_rate_hz": 30_000.0, **subject})
    export_spikedata_to_nwb(sd, tmp_path / "units.nwb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    result = subprocess.run(
        [sys.executable, "-c", code + "print(summary['counts'])\n"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "{'ok': 1, 'skipped': 0, 'failed': 0}"
    assert summary_rows(tmp_path / "test-lake") == [("dandi", "000123", 1, 2, 3, 0, 0)]
