"""The DANDI flow end to end against the stand-in archive, on a real Prefect backend."""

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable
from test_dandi import raw_nwb, sorted_units

from spikelab.exceptions import DigestMismatchError
from spikelab.flows import ingest_dandiset, ingest_dandisets, run_summary
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.delta_lake import assets_index, assets_uri, units_uri
from spikelab.io.delta_read import history, open_units
from spikelab.io.lake import connect, open_lake
from spikelab.io.manifest import read_manifest
from spikelab.loaders.dandi import _client as _dandi_client
from spikelab.testing import DandiStandIn

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(_dandi_client, "DEFAULT_BACKOFF_SECONDS", 0.01)


def trains(lake, asset_id):
    """An asset's spike trains as the lake's units table holds them, in unit order."""
    query = "SELECT spike_times_ms FROM units WHERE asset_id = ? ORDER BY unit_index"
    return [list(t) for (t,) in connect(lake).execute(query, [asset_id]).fetchall()]


def ingest(dandiset_id, **options):
    """Run the dandiset flow; return its summary whether or not an asset failed."""
    return run_summary(ingest_dandiset(dandiset_id, return_state=True, **options))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow-archive")
    with DandiStandIn(root) as server:
        server.ids = {}
        for dandiset, name, offset in [
            ("000101", "sub-1/sub-1_ses-1.nwb", 0.0),
            ("000101", "sub-1/sub-1_ses-2.nwb", 10.0),
            ("000102", "sub-2/sub-2_sorted.nwb", 20.0),
            ("000103", "sub-3/sub-3_good.nwb", 30.0),
        ]:
            path = root / f"{dandiset}-{offset}.nwb"
            from spikelab.io import export_spikedata_to_nwb

            export_spikedata_to_nwb(sorted_units(offset), path)
            server.ids[name] = server.add_asset(dandiset, name, path)
        server.ids["raw"] = server.add_asset(
            "000102", "sub-2/sub-2_raw.nwb", raw_nwb(root / "r.nwb")
        )
        bad = server.add_asset(
            "000103", "sub-3/sub-3_broken.nwb", b"\x89HDF\r\n\x1a\n" + b"\0" * 64
        )
        server.corrupt_digest(bad)
        server.ids["broken"] = bad
        server.add_asset("000103", "notes.txt", b"ignored by the glob")
        yield server


# The broken asset cannot be streamed: the loader warns and falls back to the download,
# whose digest check then fails it. That warning is expected here.
@pytest.mark.filterwarnings("ignore:streaming asset .* downloading it instead:UserWarning")
def test_dandiset_flow_lands_good_assets_and_records_failures(archive, tmp_path):
    lake = str(tmp_path / "lake")
    summaries = [
        ingest_dandiset("000101", lake=lake, api_base=archive.api_base),
        ingest_dandiset("000102", lake=lake, api_base=archive.api_base, raw_zarr=True),
        ingest("000103", lake=lake, api_base=archive.api_base),
    ]
    assert [s["counts"] for s in summaries] == [
        {"ok": 2, "skipped": 0, "failed": 0},
        {"ok": 2, "skipped": 0, "failed": 0},
        {"ok": 1, "skipped": 0, "failed": 1},
    ]
    broken = Path(
        lake, "manifests", "source=dandi", "dataset=000103", f"{archive.ids['broken']}.json"
    )
    manifest = read_manifest(broken)
    assert manifest["status"] == "failed"
    assert "DigestMismatchError" in manifest["error"]
    assert trains(lake, archive.ids["broken"]) == []
    assert assets_index(lake)[("dandi", "000103", archive.ids["broken"])].status == "failed"

    asset = archive.ids["sub-1/sub-1_ses-2.nwb"]
    assert trains(lake, asset) == [[11.0, 12.5], [17.25]]
    good = read_manifest(Path(lake, "manifests", "source=dandi", "dataset=000101", f"{asset}.json"))
    assert good["status"] == "ok" and good["spikedata"]["N"] == 2
    assert good["input"]["transfer"] == "streamed" and good["input"]["digest_verified"] is False
    assert 0 < good["input"]["bytes_read"] <= good["input"]["size"]  # small: read whole
    assert good["input"]["dandi:sha2-256"] and good["input"]["content_id"].startswith(
        f"dandi:{asset}"
    )
    assert [o["rows"] for o in good["outputs"]] == [2, None]
    assert good["outputs"][0] == {"table": "units", "version": good["table_version"], "rows": 2}
    assert (
        Path(lake, "manifests", "source=dandi", "dataset=000101", f"{asset}.png").read_bytes()[:4]
        == b"\x89PNG"
    )
    assert archive.token not in json.dumps(good)

    raw_manifest = read_manifest(
        Path(lake, "manifests", "source=dandi", "dataset=000102", f"{archive.ids['raw']}.json")
    )
    assert raw_manifest["spikedata"]["N"] == 0
    zarr = raw_manifest["outputs"][-1]
    assert zarr["path"].endswith(f"raw/{archive.ids['raw']}.zarr") and zarr["rows"] == 2000
    import spikeinterface.core as si

    assert si.read_zarr(zarr["path"]).get_num_channels() == 3

    run_files = sorted(Path(lake, "runs").glob("*.json"))
    assert len(run_files) == 3
    table = open_lake(lake).to_table()
    assert sorted(set(table.column("dataset_id").to_pylist())) == ["000101", "000102", "000103"]
    count = (
        connect(lake).execute("SELECT count(*) FROM units WHERE location_label = 'CA1'").fetchone()
    )
    assert count == (4,)

    # The nightly re-run: unchanged assets are skipped, nothing is downloaded or loaded, and
    # the listing (asset and blob ids) is all it asks the archive for.
    blob_requests, api_requests = archive.count("blob"), archive.count("api")
    again = ingest_dandiset("000101", lake=lake, api_base=archive.api_base)
    assert again["counts"] == {"ok": 0, "skipped": 2, "failed": 0}
    assert archive.count("blob") == blob_requests
    assert archive.count("api") == api_requests + 1
    assert [a["manifest"] for a in again["assets"]] == [
        str(Path(lake, "manifests", "source=dandi", "dataset=000101", f"{archive.ids[p]}.json"))
        for p in ("sub-1/sub-1_ses-1.nwb", "sub-1/sub-1_ses-2.nwb")
    ]

    # An asset the lake no longer holds is a miss: that asset alone is loaded and published
    # again (its staged files went once published, so the cached load is redone: a small
    # streamed read), and its rows are there once.
    for uri in (units_uri(lake), assets_uri(lake)):
        DeltaTable(uri).delete(f"asset_id = '{asset}'")
    assert trains(lake, asset) == []
    repaired = ingest_dandiset("000101", lake=lake, api_base=archive.api_base)
    assert repaired["counts"] == {"ok": 1, "skipped": 1, "failed": 0}
    assert [a["status"] for a in repaired["assets"]] == ["skipped", "ok"]
    assert archive.count("blob", method="GET") > blob_requests
    assert trains(lake, asset) == [[11.0, 12.5], [17.25]]
    blob_requests = archive.count("blob")

    forced = ingest_dandiset(
        "000101", lake=lake, api_base=archive.api_base, refresh=True, transfer="download"
    )
    assert forced["counts"] == {"ok": 2, "skipped": 0, "failed": 0}
    assert archive.count("blob", match="/blobs/") == blob_requests + 2  # two full downloads
    manifest = read_manifest(
        Path(lake, "manifests", "source=dandi", "dataset=000101", f"{asset}.json")
    )
    assert (manifest["input"]["transfer"], manifest["input"]["digest_verified"]) == (
        "downloaded",
        True,
    )
    assert trains(lake, asset) == [[11.0, 12.5], [17.25]]  # replaced, not doubled


def test_a_new_upload_at_the_same_path_is_ingested(archive, tmp_path):
    lake = str(tmp_path / "lake")
    first = export_spikedata_to_nwb(sorted_units(40.0), tmp_path / "first.nwb")
    old = archive.add_asset("000104", "sub-4/sub-4.nwb", first)
    assert ingest_dandiset("000104", lake=lake, api_base=archive.api_base)["counts"]["ok"] == 1
    new = archive.add_asset(
        "000104", "sub-4/sub-4.nwb", export_spikedata_to_nwb(sorted_units(50.0), tmp_path / "n.nwb")
    )
    again = ingest_dandiset("000104", lake=lake, api_base=archive.api_base)
    assert again["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert [a["asset_id"] for a in again["assets"]] == [new] and new != old
    assert trains(lake, new) == [[51.0, 52.5], [57.25]]


def test_nightly_flow_reads_the_config(archive, tmp_path):
    config = tmp_path / "dandisets.yaml"
    config.write_text(
        'dandisets:\n  - id: "000101"\n    max_assets: 1\n'
        '  - id: "000102"\n    path_glob: "*sorted*"\n'
    )
    summaries = ingest_dandisets(
        config=str(config), lake=str(tmp_path / "lake"), api_base=archive.api_base
    )
    assert [s["counts"]["ok"] for s in summaries] == [1, 1]
    assert [s["parameters"]["dandiset_id"] for s in summaries] == ["000101", "000102"]


def test_nightly_takes_its_dandisets_as_a_typed_parameter(archive, tmp_path):
    """The Prefect UI's form (a list of DandisetEntry) replaces the config file."""
    summaries = ingest_dandisets(
        config=str(tmp_path / "no-such-config.yaml"),
        dandisets=[{"id": "DANDI:000102", "path_glob": "*sorted*"}],
        lake=str(tmp_path / "lake"),
        api_base=archive.api_base,
        concurrency=2,
    )
    assert [(s["parameters"]["dandiset_id"], s["counts"]["ok"]) for s in summaries] == [
        ("000102", 1)
    ]
    assert summaries[0]["parameters"]["concurrency"] == 2


@pytest.mark.parametrize(
    ("concurrency", "variable", "expected"),
    [(None, None, "default"), (None, "7", 7), (3, "7", 3), (0, None, "1 to 256"), (None, "x", "x")],
)
def test_concurrency_comes_from_the_parameter_else_the_environment(
    monkeypatch, concurrency, variable, expected
):
    from spikelab.config import default_concurrency, resolve_concurrency

    if variable is None:
        monkeypatch.delenv("SPIKELAB_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("SPIKELAB_CONCURRENCY", variable)
    if isinstance(expected, str) and expected != "default":
        with pytest.raises(ValueError, match="is not a whole number from 1 to 256"):
            resolve_concurrency(concurrency)
        return
    wanted = default_concurrency() if expected == "default" else expected
    assert resolve_concurrency(concurrency) == wanted
    assert 32 <= default_concurrency() <= 128


@pytest.mark.filterwarnings("ignore:streaming asset .* downloading it instead:UserWarning")
def test_nightly_goes_on_after_a_dandiset_with_a_failed_asset(archive, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "dandisets.yaml"
    config.write_text('dandisets:\n  - id: "000103"\n  - id: "000101"\n    max_assets: 1\n')
    state = ingest_dandisets(
        config=str(config), lake="lake", api_base=archive.api_base, return_state=True
    )
    assert state.is_failed()
    summaries = run_summary(state)
    assert [s["parameters"]["dandiset_id"] for s in summaries] == ["000103", "000101"]
    assert [s["counts"] for s in summaries] == [
        {"ok": 1, "skipped": 0, "failed": 1},
        {"ok": 1, "skipped": 0, "failed": 0},
    ]
    # The relative lake was made absolute before anything was recorded.
    manifests = [
        json.loads(p.read_text()) for p in (tmp_path / "lake").rglob("manifests/**/*.json")
    ]
    outputs = [
        out["path"]
        for m in manifests
        if m["status"] == "ok"
        for out in m["outputs"]
        if "path" in out
    ]
    assert outputs and all(Path(path).is_absolute() for path in outputs)
    # the nightly run ends by compacting the lake: the newest units commit is the compaction
    (newest,) = history(tmp_path / "lake", limit=1)
    assert newest["operation"] == "OPTIMIZE"
    assert len(open_units(tmp_path / "lake").file_uris()) == 1


def test_bad_config_names_file_and_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text('dandisets:\n  - id: "6"\n')
    with pytest.raises(ValueError, match=r"bad.yaml: dandisets.0.id: .*did you mean 000006"):
        ingest_dandisets(config=str(config), lake=str(tmp_path / "lake"))


def files_outside(root, *inside):
    """Every file under ``root`` but outside the folders ``inside``, with its bytes."""
    return {
        path: path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not any(path.is_relative_to(folder) for folder in inside)
    }


def test_crafted_asset_ids_never_leave_the_cache(archive, tmp_path, monkeypatch):
    cache, lake = tmp_path / "cache", tmp_path / "lake"
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(cache))
    good = archive.add_asset(
        "000110", "sub-1/good.nwb", export_spikedata_to_nwb(sorted_units(60.0), tmp_path / "g.nwb")
    )
    crafted = {
        "../../victim": "sub-1/evil.nwb",  # downloads/../../victim is tmp_path/victim
        str(tmp_path / "absolute-victim"): "sub-1/evil2.nwb",
        "not-a-uuid": "sub-1/evil3.nwb",
    }
    for asset_id, path in crafted.items():
        archive.add_asset("000110", path, tmp_path / "g.nwb", asset_id=asset_id)
    # what a download to the escaped destination would have deleted (a stale partial file)
    planted = tmp_path / "victim" / "sub-1" / "evil.nwb.partial"
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"precious")
    before = files_outside(tmp_path, cache, lake)

    summary = ingest("000110", lake=str(lake), api_base=archive.api_base, transfer="download")

    assert files_outside(tmp_path, cache, lake) == before
    assert not (tmp_path / "absolute-victim").exists()
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 3}
    by_status = {}
    for asset in summary["assets"]:
        by_status.setdefault(asset["status"], []).append(asset)
    assert [a["asset_id"] for a in by_status["ok"]] == [good]
    errors = sorted(a["error"] for a in by_status["failed"])
    for asset_id in crafted:
        (error,) = [e for e in errors if repr(asset_id) in e]
        assert error.startswith("UnsafeRemoteDataError: the DANDI server ")
        assert f"{archive.api_base} sent asset_id {asset_id!r}, which is not a UUID" in error
    for asset in by_status["failed"]:  # recorded under a safe key, inside the lake
        assert asset["asset_id"].startswith("refused-")
        manifest = read_manifest(asset["manifest"])
        assert manifest["status"] == "failed" and manifest["error"] == asset["error"]
        assert Path(asset["manifest"]).parent == lake / "manifests" / "source=dandi" / (
            "dataset=000110"
        )
    # nothing was ever asked about the crafted assets: they were refused at the listing
    assert archive.count(match="victim") == archive.count(match="not-a-uuid") == 0


def task_runs_of(flow_run_id, name):
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
    return [run for run in runs if run.name.startswith(name)]


def test_a_permanent_error_fails_its_task_at_once(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(tmp_path / "cache"))
    archive.add_asset("000113", "../../escape.nwb", b"\x89HDF\r\n\x1a\n")
    summary = ingest(
        "000113", lake=str(tmp_path / "lake"), api_base=archive.api_base, transfer="download"
    )
    (asset,) = summary["assets"]
    assert asset["status"] == "failed"
    assert asset["error"].startswith("UnsafeRemoteDataError: refusing asset path '../../escape")
    (task_run,) = task_runs_of(summary["flow_run_id"], "ingest ../../escape.nwb")
    assert (task_run.run_count, task_run.state_type.value) == (1, "FAILED")
    assert task_run.state.message == "1 of 1 asset(s) failed: ../../escape.nwb"
    assert asset["seconds"] < 5  # four retries would have waited 2 + 4 + 8 + 16 s (+/- 50 %)
    assert archive.count("blob", match="escape") == 0


def test_a_digest_failure_is_reported_by_a_later_streamed_run(archive, tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(tmp_path / "cache"))
    lake = str(tmp_path / "lake")
    nwb = export_spikedata_to_nwb(sorted_units(70.0), tmp_path / "c.nwb")
    corrupt = archive.add_asset("000114", "sub-1/corrupt.nwb", nwb)
    archive.corrupt_digest(corrupt)  # the bytes load fine, but do not match what is published
    fine = archive.add_asset("000114", "sub-1/fine.nwb", nwb)

    first = ingest("000114", lake=lake, api_base=archive.api_base, transfer="download")
    assert [(a["asset_id"], a["status"]) for a in first["assets"]] == [
        (corrupt, "failed"),
        (fine, "ok"),
    ]
    assert first["assets"][0]["error"].startswith("DigestMismatchError: download of corrupt.nwb")
    assert archive.count("blob", match=corrupt_blob(archive, corrupt)) == 2  # one fresh retry
    assert list((tmp_path / "cache" / "downloads").rglob("*.nwb*")) == []

    second = ingest("000114", lake=lake, api_base=archive.api_base, transfer="stream")
    assert second["counts"] == {"ok": 1, "skipped": 1, "failed": 0}
    (streamed,) = [a for a in second["assets"] if a["asset_id"] == corrupt]
    assert streamed["status"] == "ok"
    assert streamed["error"].startswith(
        "warning: a download of this asset failed digest verification at "
    )
    manifest = read_manifest(streamed["manifest"])
    assert manifest["input"]["digest_failed_before"] is True
    assert manifest["input"]["digest_verified"] is False
    assert manifest["warnings"] == {streamed["error"]: 1}
    assert "DigestMismatchError" not in streamed["error"]
    assert "download of corrupt.nwb is corrupt" in streamed["error"]


def corrupt_blob(archive, asset_id):
    """The blob key of an asset in the stand-in (what its blob URLs contain)."""
    return archive._asset(asset_id).blob_key


def test_zarr_assets_are_skipped(archive, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(cache))
    lake = str(tmp_path / "lake")
    good = archive.add_asset(
        "000115", "sub-1/good.nwb", export_spikedata_to_nwb(sorted_units(80.0), tmp_path / "g.nwb")
    )
    zarr = archive.add_zarr_asset("000115", "sub-1/sub-1_ecephys.nwb.zarr")
    summary = ingest("000115", lake=lake, api_base=archive.api_base, path_glob=None)
    assert summary["counts"] == {"ok": 1, "skipped": 1, "failed": 0}
    outcomes = {a["asset_id"]: a for a in summary["assets"]}
    assert outcomes[good]["status"] == "ok"
    skipped = outcomes[zarr]
    assert skipped["status"] == "skipped"
    assert skipped["error"].startswith("zarr asset: sub-1/sub-1_ecephys.nwb.zarr is stored as Zarr")
    manifest = read_manifest(skipped["manifest"])
    assert (manifest["status"], manifest["error"]) == ("skipped", skipped["error"])
    assert manifest["input"]["zarr_id"] == archive._asset(zarr).zarr_id
    assert archive.count("api", match=f"/assets/{zarr}/") == 0  # decided from the listing


def test_old_partial_downloads_are_expired_when_a_run_starts(archive, tmp_path, monkeypatch):
    import os
    import time

    downloads = tmp_path / "cache" / "downloads"
    monkeypatch.setenv("SPIKELAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SPIKELAB_PARTIAL_MAX_AGE_HOURS", "1")
    old_folder = downloads / "9f0c3c1e-0000-4000-8000-000000000001" / "sub-1"
    new_folder = downloads / "9f0c3c1e-0000-4000-8000-000000000002" / "sub-1"
    for folder in (old_folder, new_folder):
        folder.mkdir(parents=True)
        for name in ("a.nwb.partial", "a.nwb.partial.json", ".a.nwb.0f3e.part"):
            (folder / name).write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in [*old_folder.iterdir(), old_folder, old_folder.parent]:
        os.utime(path, (two_hours_ago, two_hours_ago))
    ingest("000101", lake=str(tmp_path / "lake"), api_base=archive.api_base, max_assets=1)
    assert not old_folder.parent.exists()
    assert sorted(p.name for p in new_folder.iterdir()) == [
        ".a.nwb.0f3e.part",
        "a.nwb.partial",
        "a.nwb.partial.json",
    ]


def real_errors(archive, tmp_path):
    """Errors raised by the real code paths, keyed by what they are."""
    import socket

    import requests

    from spikelab.loaders.dandi._client import DandiClient
    from spikelab.loaders.dandi._download import safe_destination
    from spikelab.loaders.dandi._records import check_server_id

    def caught(call):
        try:
            call()
        except Exception as error:  # noqa: BLE001 - collected for the predicate
            return error
        raise AssertionError("expected an error")

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/"
    client = DandiClient(archive.api_base, max_attempts=2, backoff_seconds=0.0)
    archive.inject("503", times=2, match="/dandisets/000101/versions/draft/assets/")
    archive.inject("429", times=2, match="/dandisets/000102/versions/draft/assets/")
    archive.inject("slow", match="/dandisets/000103/")
    garbage = tmp_path / "garbage.nwb"
    garbage.write_bytes(b"not hdf5")
    from spikelab.loaders import load_spikedata_from_nwb

    return {
        "transient": {
            "read timeout": caught(
                lambda: requests.get(f"{archive.api_base}/dandisets/000103/", timeout=0.2)
            ),
            "socket reset": ConnectionResetError(104, "Connection reset by peer"),
            "builtin timeout": TimeoutError("timed out"),
        },
        "permanent": {
            # spikelab's HTTP layer retried these requests: Prefect does not again
            "HTTP 503 after retries": caught(
                lambda: client.get_json("/dandisets/000101/versions/draft/assets/")
            ),
            "HTTP 429 after retries": caught(
                lambda: client.get_json("/dandisets/000102/versions/draft/assets/")
            ),
            # offline: a refused connection fails at once instead of retrying for a minute
            "connection refused": caught(lambda: requests.get(closed, timeout=2)),
            "HTTP 404": caught(lambda: client.get_json("/dandisets/000404/")),
            "crafted id": caught(lambda: check_server_id("asset_id", "../x", archive.api_base)),
            "unsafe path": caught(lambda: safe_destination(tmp_path, "../../x.nwb")),
            "malformed file": caught(lambda: load_spikedata_from_nwb(garbage)),
            "missing file": caught(lambda: load_spikedata_from_nwb(tmp_path / "none.nwb")),
            "bad value": caught(lambda: int("x")),
            "missing key": caught(lambda: {}["units"]),
            "digest mismatch": DigestMismatchError("download of x.nwb is corrupt"),
        },
    }


def test_only_transient_errors_are_retried(archive, tmp_path):
    from prefect.states import Failed

    from spikelab.tasks._policy import retry_unless_client_error

    errors = real_errors(archive, tmp_path)
    decided = {
        kind: {
            name: retry_unless_client_error(None, None, Failed(data=error))
            for name, error in named.items()
        }
        for kind, named in errors.items()
    }
    assert decided["transient"] == dict.fromkeys(errors["transient"], True)
    assert decided["permanent"] == dict.fromkeys(errors["permanent"], False)
    assert type(errors["permanent"]["malformed file"]).__name__ == "FileFormatError"


def test_a_task_retries_a_transient_error_and_not_a_permanent_one():
    from prefect import flow, task

    from spikelab.exceptions import RemoteError
    from spikelab.tasks._policy import NETWORK_RETRIES, retry_unless_client_error

    script = {
        "transient": [ConnectionResetError(104, "reset"), TimeoutError("timed out")],
        "permanent": [FileNotFoundError("x.nwb")],
        "retried below": [RemoteError("GET x answered HTTP 503 after 5 attempts", status=503)],
    }
    calls = []

    @task(
        **{**NETWORK_RETRIES, "retry_delay_seconds": 0, "retry_jitter_factor": None},
        retry_condition_fn=retry_unless_client_error,
    )
    def attempt(kind: str) -> str:
        calls.append(kind)
        failures = script[kind]
        if len([c for c in calls if c == kind]) <= len(failures):
            raise failures[len([c for c in calls if c == kind]) - 1]
        return "done"

    @flow
    def run(kind: str) -> str:
        return attempt(kind)

    assert run("transient") == "done"
    assert calls.count("transient") == 3
    with pytest.raises(FileNotFoundError, match="x.nwb"):
        run("permanent")
    assert calls.count("permanent") == 1
    with pytest.raises(RemoteError, match="after 5 attempts"):
        run("retried below")
    assert calls.count("retried below") == 1  # one retry layer: the HTTP layer's


@pytest.mark.parametrize("transfer", ["stream", "download"])
def test_a_changed_asset_costs_no_request_to_the_api(archive, tmp_path, transfer):
    """The listing carries each record, and a public blob is read from its own URL."""
    import hashlib

    dandiset = "000106" if transfer == "stream" else "000107"
    nwb = export_spikedata_to_nwb(sorted_units(60.0), tmp_path / "once.nwb")
    asset_id = archive.add_asset(dandiset, "sub-6/sub-6.nwb", nwb)
    lake = str(tmp_path / "lake")
    summary = ingest_dandiset(dandiset, lake=lake, api_base=archive.api_base, transfer=transfer)
    assert summary["counts"] == {"ok": 1, "skipped": 0, "failed": 0}
    assert archive.count("api", match=f"/assets/{asset_id}/") == 0  # nor its download
    assert archive.count("api", match=f"/dandisets/{dandiset}/") == 1  # the listing's page
    assert archive.count("blob", "GET") > 0
    manifest = read_manifest(summary["assets"][0]["manifest"])
    assert manifest["input"]["dandi:sha2-256"] == hashlib.sha256(nwb.read_bytes()).hexdigest()
    assert manifest["input"]["path"] == "sub-6/sub-6.nwb"
    assert manifest["input"]["transfer"] == ("streamed" if transfer == "stream" else "downloaded")
    assert trains(lake, asset_id) == [[61.0, 62.5], [67.25]]


@pytest.mark.parametrize(
    ("changed", "concurrency", "size"),
    [(1, 32, 1), (64, 32, 1), (65, 32, 2), (300, 32, 5), (1000, 32, 8), (100_000, 32, 8)],
)
def test_a_task_run_takes_one_asset_unless_the_dandiset_is_large(changed, concurrency, size):
    from spikelab.flows._in_flight import batch_size

    assert batch_size(changed, concurrency) == size


def test_in_flight_task_runs_stay_within_the_window():
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from spikelab.flows._in_flight import AssetResults, run_in_flight

    lock, running, most = threading.Lock(), [0], [0]

    def work(batch):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return [f"result {i}" for i in batch]

    class Wrapped:
        """What the flow needs of a Prefect future: a done callback and the result."""

        def __init__(self, inner):
            self.inner = inner

        def add_done_callback(self, callback):
            self.inner.add_done_callback(lambda _: callback(self))

        def result(self, raise_on_failure=False):
            return AssetResults(self.inner.result())

    with ThreadPoolExecutor(10) as pool:
        batches = [[i, i + 1] for i in range(0, 40, 2)]
        results = dict(
            run_in_flight(iter(batches), lambda b: Wrapped(pool.submit(work, b)), window=3)
        )
    assert results == {i: f"result {i}" for i in range(40)}
    assert 1 < most[0] <= 3


def test_a_consumed_task_run_result_is_freed_without_waiting_for_the_collector(prefect_harness):
    """A finished future sits in a reference cycle; the assets' data must not stay with it."""
    import gc
    import weakref

    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    from spikelab.flows._in_flight import AssetResults, run_in_flight

    class Asset:
        """Stands for an asset's pending publication (its units table and raster)."""

        def __init__(self, index: int) -> None:
            self.index = index

    @task(persist_result=False)
    def work(batch: list[int]) -> AssetResults:
        return AssetResults([Asset(i) for i in batch])  # type: ignore[misc]

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))  # type: ignore[arg-type]
    def consume() -> list[bool]:
        taken = []
        for index, item in run_in_flight(iter([[0, 1], [2, 3]]), work.submit, window=2):
            assert item.index == index  # type: ignore[union-attr]
            taken.append(weakref.ref(item))
        del item  # the publisher is done with it: only the task run's result could hold it
        return [asset() is not None for asset in taken]

    gc.disable()
    try:
        alive = consume()
    finally:
        gc.enable()
    assert alive == [False, False, False, False]


def test_the_listing_is_let_go_as_the_run_goes(archive, tmp_path, monkeypatch):
    """An asset's record is freed once its task run is done, not held to the run's end."""
    import gc
    import weakref

    from spikelab.flows import dandi as dandi_flow

    nwb = export_spikedata_to_nwb(sorted_units(0.0), tmp_path / "shared.nwb")
    for index in range(6):
        archive.add_asset("000108", f"sub-{index}/sub-{index}.nwb", nwb)
    records: list[weakref.ref] = []
    alive_at_the_last: list[str] = []
    read = dandi_flow.ingest_asset

    def ingest_asset(asset, known, run):
        gc.collect()
        if asset.path == "sub-5/sub-5.nwb":
            alive_at_the_last.extend(r().path for r in records if r() is not None)
        records.append(weakref.ref(asset))
        return read(asset, known, run)

    monkeypatch.setattr(dandi_flow, "ingest_asset", ingest_asset)
    lake = str(tmp_path / "lake")
    summary = ingest_dandiset("000108", lake=lake, api_base=archive.api_base, concurrency=1)
    assert summary["counts"] == {"ok": 6, "skipped": 0, "failed": 0}
    # one task run at a time, three assets each: only the last one's own records remain
    assert alive_at_the_last == ["sub-3/sub-3.nwb", "sub-4/sub-4.nwb"]
