"""The ``spikelab`` command: help, the demo end to end, lake queries, bad arguments."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dandi_server import DandiStandIn

from spikelab.cli import build_parser, run
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.lake import Lake, connect
from spikelab.io.manifest import read_manifest
from spikelab.io.units_table import write_units_table
from spikelab.lake_queries import find_units
from spikelab.spikedata import SpikeData

COMMANDS = [
    [],
    ["ingest"],
    ["ingest", "dandi"],
    ["ingest", "nightly"],
    ["ingest", "ibl"],
    ["ingest", "files"],
    ["lake"],
    ["lake", "summary"],
    ["lake", "units"],
    ["demo"],
    ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "spikelab")
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: spikelab" in capsys.readouterr().out


def test_console_script_help_is_fast_and_light():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "spikelab.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "usage: spikelab" in result.stdout
    imported = result.stderr
    for heavy in ("prefect", "pynwb", "spikeinterface", "duckdb", "pyarrow"):
        assert f" {heavy}\n" not in imported and f" {heavy}." not in imported, heavy


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "dandi", "6"], "did you mean 000006"),
        (["ingest", "dandi", "abc"], "not a six-digit DANDI id"),
        (["ingest", "nightly", "--config", "/nonexistent/dandisets.yaml"], "config file not found"),
        (["ingest", "files", "/nonexistent/file.nwb"], "no such file or folder"),
        (["lake", "units", "--format", "parquet"], "needs --output FILE"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert run([*argv, "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_lake_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "lake.txt"
    afile.write_text("x")
    assert run(["lake", "summary", "--lake", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.usefixtures("prefect_harness")
def test_demo_end_to_end(tmp_path, capfd):
    lake = tmp_path / "spikelab-lake"
    assert run(["demo", "--lake", str(lake)]) == 0
    out = capfd.readouterr().out
    assert "3 loaded, 0 skipped, 0 failed" in out and str(lake) in out
    assert connect(lake).execute("SELECT count(*) FROM units").fetchone() == (50,)
    assert run(["lake", "units", "--region", "CA1", "--lake", str(lake), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert len(frame) == 12 and set(frame["location_label"]) == {"CA1"}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("transfer", "expected"), [(None, "streamed"), ("download", "downloaded")])
def test_ingest_dandi_transfer_option(tmp_path, capfd, transfer, expected):
    sd = SpikeData([[1.0, 2.5], [7.25]], length=10.0, metadata={"identifier": "cli"})
    with DandiStandIn(tmp_path / "archive") as archive:
        asset = archive.add_asset(
            "000321", "sub-1/units.nwb", export_spikedata_to_nwb(sd, tmp_path / "u.nwb")
        )
        option = [] if transfer is None else ["--transfer", transfer]
        argv = ["ingest", "dandi", "000321", "--api-base", archive.api_base, *option]
        assert run([*argv, "--lake", str(tmp_path / "lake")]) == 0
    assert "1 loaded" in capfd.readouterr().out
    manifest = read_manifest(Lake(tmp_path / "lake").manifest_path("dandi", "000321", asset))
    assert manifest["input"]["transfer"] == expected


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("query") / "lake")
    rng = np.random.default_rng(1)
    for source, dataset, asset in [
        ("dandi", "000001", "a"),
        ("ibl", "eid", "p"),
        ("files", "x", "f"),
    ]:
        n = 20
        trains = [np.sort(rng.uniform(0, 1000, rng.integers(0, 60))) for _ in range(n)]
        regions = rng.choice(["CA1", "DG", "MOs", None], size=n).tolist()
        attributes = [
            {"unit_id": i} | ({"location_label": r} if r else {}) for i, r in enumerate(regions)
        ]
        sd = SpikeData(trains, length=1000.0, neuron_attributes=attributes)
        write_units_table(
            sd,
            lake.units_path(source, dataset, asset),
            source=source,
            dataset_id=dataset,
            asset_id=asset,
        )
    return lake


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"regions": ["CA1"]},
        {"regions": ["CA1", "MOs"], "min_rate_hz": 20.0},
        {"source": "ibl"},
        {"dataset": "000001", "regions": ["DG"]},
        {"regions": ["CA3"]},
    ],
)
def test_lake_units_matches_a_pandas_reference(small_lake, filters):
    files = sorted(Path(small_lake.root, "units").rglob("*.parquet"))
    reference = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    reference["dataset"] = reference["dataset_id"]
    keep = pd.Series(True, index=reference.index)
    if filters.get("regions"):
        keep &= reference["location_label"].isin(filters["regions"])
    if filters.get("min_rate_hz") is not None:
        keep &= reference["firing_rate_hz"] >= filters["min_rate_hz"]
    if filters.get("source"):
        keep &= reference["source"] == filters["source"]
    if filters.get("dataset"):
        keep &= reference["dataset"] == filters["dataset"]
    expected = reference[keep].sort_values(["source", "dataset", "asset_id", "unit_index"])
    found = find_units(small_lake.root, **filters)
    assert found["unit_id"].tolist() == expected["unit_id"].tolist()
    assert found["asset_id"].tolist() == expected["asset_id"].tolist()
    np.testing.assert_allclose(found["firing_rate_hz"], expected["firing_rate_hz"])


def test_lake_units_parquet_output(small_lake, tmp_path, capsys):
    out = tmp_path / "ca1.parquet"
    argv = [
        "lake",
        "units",
        "--region",
        "CA1",
        "--lake",
        small_lake.root,
        "--format",
        "parquet",
        "--output",
        str(out),
    ]
    assert run(argv) == 0
    assert pd.read_parquet(out)["location_label"].eq("CA1").all()
    assert f"units -> {out}" in capsys.readouterr().out


def test_parser_lists_every_command():
    help_text = build_parser().format_help()
    for command in ("ingest", "lake", "demo", "serve"):
        assert command in help_text
