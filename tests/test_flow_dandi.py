"""The DANDI flow end to end against the stand-in archive, on a real Prefect backend."""

import json
from pathlib import Path

import pytest
from dandi_server import DandiStandIn
from test_dandi import raw_nwb, sorted_units

from spikelab.flows import ingest_dandiset, ingest_dandisets
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.lake import connect, open_lake
from spikelab.io.manifest import read_manifest
from spikelab.io.units_table import read_units_table
from spikelab.loaders import _dandi_client

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(_dandi_client, "DEFAULT_BACKOFF_SECONDS", 0.01)


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
        ingest_dandiset("000103", lake=lake, api_base=archive.api_base),
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
    assert not Path(
        lake, "units", "source=dandi", "dataset=000103", f"{archive.ids['broken']}.parquet"
    ).exists()

    asset = archive.ids["sub-1/sub-1_ses-2.nwb"]
    units = read_units_table(
        Path(lake, "units", "source=dandi", "dataset=000101", f"{asset}.parquet")
    )
    assert [t.tolist() for t in units.train] == [[11.0, 12.5], [17.25]]
    good = read_manifest(Path(lake, "manifests", "source=dandi", "dataset=000101", f"{asset}.json"))
    assert good["status"] == "ok" and good["spikedata"]["N"] == 2
    assert good["input"]["transfer"] == "streamed" and good["input"]["digest_verified"] is False
    assert 0 < good["input"]["bytes_read"] <= good["input"]["size"]  # small: read whole
    assert good["input"]["dandi:sha2-256"] and good["input"]["content_id"].startswith(
        f"dandi:{asset}"
    )
    assert [o["rows"] for o in good["outputs"]] == [2, None]
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
    assert sorted(set(table.column("dataset").to_pylist())) == ["000101", "000102", "000103"]
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

    # A lost output file is a miss: the asset is published again from the cached load.
    Path(lake, "units", "source=dandi", "dataset=000101", f"{asset}.parquet").unlink()
    repaired = ingest_dandiset("000101", lake=lake, api_base=archive.api_base)
    assert repaired["counts"] == {"ok": 1, "skipped": 1, "failed": 0}
    assert archive.count("blob") == blob_requests  # nothing read again: the load was cached

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
    units = read_units_table(
        Path(lake, "units", "source=dandi", "dataset=000104", f"{new}.parquet")
    )
    assert [t.tolist() for t in units.train] == [[51.0, 52.5], [57.25]]


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


def test_bad_config_names_file_and_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text('dandisets:\n  - id: "6"\n')
    with pytest.raises(ValueError, match=r"bad.yaml: dandisets.0.id: .*did you mean 000006"):
        ingest_dandisets(config=str(config), lake=str(tmp_path / "lake"))
