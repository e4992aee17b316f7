"""The ``spikelab`` command: help, the demo end to end, lake queries, bad arguments."""

import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spikelab.cli import FlowRunError, build_parser, cli_words, run, summaries_of
from spikelab.demo_data import write_hdf5
from spikelab.exceptions import IngestFailedError
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.delta_lake import publish
from spikelab.io.lake import Lake, connect
from spikelab.io.manifest import read_manifest
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import SUMMARY_COLUMNS, find_units, lake_summary, summary_rows
from spikelab.spikedata import SpikeData
from spikelab.testing.dandi_archive import DandiStandIn

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
    ["lake", "history"],
    ["lake", "compact"],
    ["lake", "migrate"],
    ["demo"],
    ["server"],
    ["server", "start"],
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
        (["ingest", "dandi", "000006", "--version", "../x"], "neither 'draft' nor"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert run([*argv, "--lake", str(tmp_path / "lake")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_bad_version_in_the_nightly_config_is_a_usage_error(tmp_path, capsys):
    config = tmp_path / "dandisets.yaml"
    config.write_text('dandisets:\n  - id: "000006"\n    version: "0.1/../x"\n')
    assert run(["ingest", "nightly", "--config", str(config), "--lake", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "dandisets.yaml" in err and "dandisets.0.version" in err and "neither" in err


def test_nightly_reads_the_packaged_config_unless_given_one(tmp_path):
    from spikelab.cli import nightly_config
    from spikelab.config import DandisetsConfig, default_config_path, load_config

    assert build_parser().parse_args(["ingest", "nightly"]).config is None
    packaged = nightly_config(None)
    assert packaged == default_config_path("dandisets.yaml").resolve() and packaged.is_file()
    assert load_config(packaged, DandisetsConfig).dandisets  # it names dandisets
    mine = tmp_path / "mine.yaml"
    assert nightly_config(str(mine)) == mine


def test_lake_that_is_a_file(tmp_path, capsys):
    afile = tmp_path / "lake.txt"
    afile.write_text("x")
    assert run(["lake", "summary", "--lake", str(afile)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_the_kept_demo_dataset_is_written_once_and_made_whole_again(tmp_path):
    import h5py

    from spikelab.demo_data import kept_demo_dataset

    nwb, kilosort, hdf5 = kept_demo_dataset(tmp_path / "demo")
    written = nwb.stat().st_mtime_ns
    assert kept_demo_dataset(tmp_path / "demo") == [nwb, kilosort, hdf5]
    assert nwb.stat().st_mtime_ns == written  # found, not written again
    with h5py.File(hdf5) as handle:
        spikes = handle["spike_times"][:]
    hdf5.unlink()
    assert kept_demo_dataset(tmp_path / "demo")[2] == hdf5
    with h5py.File(hdf5) as handle:  # the same seeded spikes
        np.testing.assert_array_equal(handle["spike_times"][:], spikes)
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]  # no staging folder left


@pytest.mark.usefixtures("prefect_harness")
def test_demo_end_to_end(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lake = tmp_path / "spikelab-lake"
    assert run(["demo", "--lake", "spikelab-lake"]) == 0  # relative: made absolute first
    out = capfd.readouterr().out
    assert "3 loaded, 0 skipped, 0 failed" in out and f"-> lake {lake}\n" in out
    for path in Lake(lake).manifest_files():
        manifest = read_manifest(path)
        files = [o["path"] for o in manifest["outputs"] if "path" in o]
        assert files and all(f.startswith(f"{lake}/") for f in files)
        tables = [o for o in manifest["outputs"] if o.get("table") == "units"]
        assert [t["version"] for t in tables] == [manifest["table_version"]]
    assert connect(lake).execute("SELECT count(*) FROM units").fetchone() == (50,)
    assert sum(row[3] for row in summary_rows(lake)) == 50
    assert run(["lake", "units", "--region", "CA1", "--lake", str(lake), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capfd.readouterr().out))
    assert len(frame) == 12 and set(frame["location_label"]) == {"CA1"}
    # a second demo finds the same inputs: nothing is added again under new keys
    assert run(["demo", "--lake", "spikelab-lake"]) == 0
    again = capfd.readouterr().out  # the headline agrees with the summary's skipped column
    assert "0 loaded, 3 unchanged, 0 skipped, 0 failed" in again
    assert ["files", "demo", "3", "50"] == again.splitlines()[-3].split()[:4]
    assert again.splitlines()[-3].split()[-1] == "0"
    assert connect(lake).execute("SELECT count(*) FROM units").fetchone() == (50,)
    assert len(Lake(lake).manifest_files()) == 3


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("transfer", "expected"), [(None, "streamed"), ("download", "downloaded")])
def test_ingest_dandi_transfer_option(tmp_path, capfd, transfer, expected):
    subject = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}
    metadata = {"identifier": "cli", "sampling_rate_hz": 30_000.0, **subject}
    sd = SpikeData([[1.0, 2.5], [7.25]], length=10.0, metadata=metadata)
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


def _dandi_ready(sd: SpikeData, path: Path) -> Path:
    subject = {"subject_id": "m1", "species": "Mus musculus", "sex": "F", "age": "P90D"}
    sd.metadata.update({"identifier": path.stem, "sampling_rate_hz": 30_000.0, **subject})
    return export_spikedata_to_nwb(sd, path)


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_dandi_with_a_failed_asset_exits_1(tmp_path, capfd):
    good = _dandi_ready(SpikeData([[1.0, 2.0]], length=5.0), tmp_path / "good.nwb")
    with DandiStandIn(tmp_path / "archive") as archive:
        archive.add_asset("000322", "sub-1/good.nwb", good)
        broken = archive.add_asset("000322", "sub-2/broken.nwb", b"not an NWB file at all")
        argv = ["ingest", "dandi", "000322", "--api-base", archive.api_base]
        assert run([*argv, "--lake", str(tmp_path / "lake")]) == 1
    out = capfd.readouterr().out.splitlines()
    assert out[0] == f"1 loaded, 0 skipped, 1 failed -> lake {tmp_path / 'lake'}"
    assert out[1].startswith(f"  failed: {broken}: ") and len(out) == 2


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_nightly_prints_one_summary_per_dandiset(tmp_path, capfd):
    with DandiStandIn(tmp_path / "archive") as archive:
        for dandiset in ("000401", "000402"):
            sd = SpikeData([[1.0, 2.0], [3.0]], length=5.0)
            archive.add_asset(
                dandiset, "sub-1/u.nwb", _dandi_ready(sd, tmp_path / f"{dandiset}.nwb")
            )
        config = tmp_path / "dandisets.yaml"
        config.write_text("dandisets:\n  - id: '000401'\n  - id: DANDI:000402\n")
        argv = ["ingest", "nightly", "--config", str(config), "--api-base", archive.api_base]
        assert run([*argv, "--lake", str(tmp_path / "lake")]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out == [f"1 loaded, 0 skipped, 0 failed -> lake {tmp_path / 'lake'}"] * 2
    summary = lake_summary(tmp_path / "lake")
    assert summary[["dataset", "units", "spikes"]].values.tolist() == [
        ["000401", 2, 3],
        ["000402", 2, 3],
    ]


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    """A Delta lake of three sources, and the units it holds as one pandas reference."""
    root = str(tmp_path_factory.mktemp("query") / "lake")
    rng = np.random.default_rng(1)
    tables = []
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
        units = units_arrow_table(sd, source=source, dataset_id=dataset, asset_id=asset)
        publish(root, [((source, dataset, asset), units, {"status": "ok"})])
        tables.append(units.to_pandas())
    return root, pd.concat(tables, ignore_index=True)


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
    root, reference = small_lake
    reference = reference.assign(dataset=reference["dataset_id"])
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
    found = find_units(root, **filters)
    assert len(found) == len(expected)
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
        small_lake[0],
        "--format",
        "parquet",
        "--output",
        str(out),
    ]
    assert run(argv) == 0
    written = pd.read_parquet(out)
    reference = small_lake[1]
    assert len(written) == reference["location_label"].eq("CA1").sum() > 0
    assert written["location_label"].eq("CA1").all()
    assert f"units -> {out}" in capsys.readouterr().out


def test_parser_lists_every_command():
    help_text = build_parser().format_help()
    for command in ("ingest", "lake", "demo", "serve"):
        assert command in help_text


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        run(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"spikelab {version('spikelab')}\n"


@pytest.mark.parametrize(
    ("command", "status_line"),
    [
        (["lake"], "0  answered (a lake folder that does not exist answers as an empty lake)"),
        (["server"], "2  usage error: bad option, port taken"),
    ],
)
def test_lake_and_server_help_give_their_own_exit_statuses(command, status_line, capsys):
    with pytest.raises(SystemExit):
        run([*command, "--help"])
    text = capsys.readouterr().out
    assert "exit status:" in text and status_line in text
    assert "every input or asset landed" not in text  # the ingest commands' statuses


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "fast"])
def test_min_rate_must_be_a_finite_non_negative_number(value, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run(["lake", "units", "--lake", str(tmp_path), f"--min-rate={value}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --min-rate" in err and value in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["ingest", "ibl", "--regions", "CA1", "--min-fraction", "1.5"],
        ["ingest", "ibl", "--regions", "CA1", "--min-units", "-2"],
        ["ingest", "ibl", "--regions", "CA1", "--max-probes", "0"],
        ["ingest", "dandi", "000006", "--max-assets", "0"],
        ["server", "start", "--port", "0"],
    ],
)
def test_numeric_options_are_checked_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    assert exit_info.value.code == 2
    assert f"argument {argv[-2]}" in capsys.readouterr().err


def test_dask_address_needs_the_dask_runner(tmp_path, capsys):
    argv = ["ingest", "ibl", "--regions", "CA1", "--dask-address", "tcp://127.0.0.1:1"]
    assert run([*argv, "--lake", str(tmp_path / "lake")]) == 2
    assert "--dask-address needs --task-runner dask" in capsys.readouterr().err


@pytest.mark.parametrize("state", ["missing", "empty", "no units folder"])
def test_lake_summary_of_an_empty_or_missing_lake(tmp_path, capsys, state):
    lake = tmp_path / "lake"
    if state != "missing":
        lake.mkdir()
    if state == "no units folder":
        (lake / "runs").mkdir()
    assert run(["lake", "summary", "--lake", str(lake)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "the lake is empty\n"
    missing_note = f"spikelab: no lake at {lake} (check --lake or SPIKELAB_LAKE)\n"
    assert captured.err == (missing_note if state == "missing" else "")
    frame = lake_summary(lake)
    assert len(frame) == 0 and tuple(frame.columns) == SUMMARY_COLUMNS


def test_lake_summary_counts_assets_that_loaded_no_units(tmp_path, capsys):
    lake = str(tmp_path / "lake")
    inputs = {
        "full": SpikeData([[1.0, 2.0], [3.0]], length=10.0),
        "empty": SpikeData([], length=10.0),
        "elsewhere": SpikeData([], length=5.0),
    }
    for asset, sd in inputs.items():
        dataset = "other" if asset == "elsewhere" else "ds1"
        units = units_arrow_table(sd, source="files", dataset_id=dataset, asset_id=asset)
        publish(lake, [(("files", dataset, asset), units, {"status": "ok"})])
    broken = {"status": "failed", "error": "ValueError: bad"}  # counted apart
    publish(lake, [(("files", "ds1", "broken"), None, broken)])
    frame = lake_summary(lake)
    assert frame.to_dict("records") == [
        {
            "source": "files",
            "dataset": "ds1",
            "assets": 2,
            "units": 2,
            "spikes": 3,
            "failed": 1,
            "skipped": 0,
        },
        {
            "source": "files",
            "dataset": "other",
            "assets": 1,
            "units": 0,
            "spikes": 0,
            "failed": 0,
            "skipped": 0,
        },
    ]
    assert run(["lake", "summary", "--lake", lake]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["files", "other", "1", "0", "0", "0", "0"] in rows
    assert ["files", "ds1", "2", "2", "3", "1", "0"] in rows


def test_default_lake_comes_from_spikelab_lake(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "not-a-folder"
    afile.write_text("x")
    monkeypatch.setenv("SPIKELAB_LAKE", str(afile))
    assert run(["lake", "summary"]) == 2
    assert f"--lake {afile} is a file" in capsys.readouterr().err


def test_cli_messages_name_options_not_keywords():
    assert (
        cli_words("cannot tell the format of a.xyz from its suffix; pass format= one of nwb")
        == "cannot tell the format of a.xyz from its suffix; pass --format one of nwb"
    )
    assert cli_words("pass --trust-pickles / trust_pickles=True if you trust it") == (
        "pass --trust-pickles if you trust it"
    )
    assert cli_words("min_rate_hz=3 is too high; reformat= stays") == (
        "--min-rate 3 is too high; reformat= stays"
    )


def test_summaries_come_from_completed_and_failed_states():
    from prefect.states import Completed, Failed

    summary = {"counts": {"ok": 1, "skipped": 0, "failed": 1}, "assets": []}
    assert summaries_of(Completed(data=summary)) == [summary]
    assert summaries_of(Failed(message="1 failed", data=summary)) == [summary]
    failed = Failed(message="1 failed", data=IngestFailedError("1 loaded, 1 failed", summary))
    assert summaries_of(failed) == [summary]
    assert summaries_of(Completed(data=[summary, summary])) == [summary, summary]
    with pytest.raises(FlowRunError, match="the flow run failed: ValueError: boom"):
        summaries_of(Failed(data=ValueError("boom")))


def test_help_documents_the_exit_codes(capsys):
    """``--help`` names the three exit statuses.

    The statuses themselves: test_demo_end_to_end (0),
    test_a_failed_input_prints_one_line_and_exits_1 and
    test_ingest_dandi_with_a_failed_asset_exits_1 (1),
    test_bad_arguments_give_one_line_and_exit_2 (2). What the README's other words named
    is checked by behaviour too: --trust-pickles (test_pickles_load_only_with_trust_pickles),
    SPIKELAB_LAKE (test_default_lake_comes_from_spikelab_lake), spikelab server start and
    demo --keep-server (tests/test_server.py), the quick start's extras
    (tests/test_packaging.py::test_the_quick_start_extras_install_everything).
    """
    with pytest.raises(SystemExit):
        run(["--help"])
    out = capsys.readouterr().out
    for code in (
        "0  every input or asset landed or was skipped",
        "1  some input or asset failed",
        "2  usage or configuration error",
    ):
        assert code in out


def _subprocess_env(api_url):
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}


@pytest.fixture
def harness_api_url(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def test_a_failed_input_prints_one_line_and_exits_1(tmp_path, harness_api_url):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "broken.nwb").write_bytes(b"not an HDF5 file")
    good = write_hdf5(inputs / "good.h5", np.random.default_rng(5))
    latin1 = os.fsdecode(bytes(inputs) + b"/caf\xe9.h5")
    shutil.copy(good, latin1)
    lake = tmp_path / "lake"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikelab.cli",
            "ingest",
            "files",
            str(inputs / "broken.nwb"),
            str(good),
            latin1,
            "--lake",
            str(lake),
        ],
        env=_subprocess_env(harness_api_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"1 loaded, 0 skipped, 2 failed -> lake {lake}"
    failed = [line for line in lines if line.startswith("  failed: ")]
    assert len(failed) == 2 and len(lines) == 3
    assert "broken.nwb" in failed[0] and "not a readable NWB/HDF5 file" in failed[0]
    assert "caf\\xe9.h5" in failed[1] and "not valid UTF-8" in failed[1]
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == ""
    assert connect(lake).execute("SELECT count(*) FROM units").fetchone() == (12,)


def test_pickles_load_only_with_trust_pickles(tmp_path, harness_api_url):
    sd = SpikeData([[1.0, 4.0], [2.5]], length=10.0, metadata={"identifier": "p"})
    path = tmp_path / "trusted.pkl"
    path.write_bytes(pickle.dumps(sd))
    argv = [
        sys.executable,
        "-m",
        "spikelab.cli",
        "ingest",
        "files",
        str(path),
        "--lake",
        str(tmp_path / "lake"),
    ]
    refused = subprocess.run(
        argv, env=_subprocess_env(harness_api_url), capture_output=True, text=True, timeout=300
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "--trust-pickles" in refused.stdout and "trust_pickles" not in refused.stdout
    trusted = subprocess.run(
        [*argv, "--trust-pickles"],
        env=_subprocess_env(harness_api_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    assert "1 loaded, 0 skipped, 0 failed" in trusted.stdout
    units = find_units(tmp_path / "lake")
    assert units["n_spikes"].tolist() == [2, 1]


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory):
    """A lake whose answers are far larger than a pipe's buffer."""
    root = str(tmp_path_factory.mktemp("big") / "lake")
    trains = [[float(i), float(i) + 0.5] for i in range(20_000)]
    attributes = [{"unit_id": i, "location_label": "CA1"} for i in range(20_000)]
    sd = SpikeData(trains, length=30_000.0, neuron_attributes=attributes)
    units = units_arrow_table(sd, source="files", dataset_id="big", asset_id="a")
    publish(root, [(("files", "big", "a"), units, {"status": "ok"})])
    return root


def test_csv_on_stdout_appends_to_what_the_stream_already_holds(big_lake, tmp_path):
    answer = tmp_path / "answer.csv"
    answer.write_bytes(b"FIRST\n")
    argv = [sys.executable, "-m", "spikelab.cli", "lake", "units", "--region", "CA1"]
    with answer.open("ab") as stream:  # like `>> answer.csv`
        subprocess.run([*argv, "--format", "csv", "--lake", big_lake], stdout=stream, check=True)
        stream.write(b"LAST\n")
    lines = answer.read_bytes().splitlines()
    assert lines[0] == b"FIRST" and lines[-1] == b"LAST"
    frame = pd.read_csv(io.BytesIO(b"\n".join(lines[1:-1])))
    assert len(frame) == 20_000 and set(frame["location_label"]) == {"CA1"}


@pytest.mark.parametrize("output", ["table", "csv"])
def test_lake_units_into_a_closed_pipe_ends_quietly(big_lake, output):
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spikelab.cli",
            "lake",
            "units",
            "--region",
            "CA1",
            "--format",
            output,
            "--lake",
            big_lake,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as command:  # closes the pipes and waits even when a check fails
        first = command.stdout.read(200)  # what `| head` reads before it exits
        command.stdout.close()
        assert command.wait(timeout=120) == 0
        assert b"unit_id" in first
        assert command.stderr.read() == b""


def test_a_relative_cache_folder_is_made_absolute(tmp_path, monkeypatch):
    from spikelab.tasks import cache_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", "relative-cache")
    folder = cache_dir()
    assert folder == tmp_path / "relative-cache" and folder.is_dir()
