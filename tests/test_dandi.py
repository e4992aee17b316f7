"""DANDI loaders against the stand-in archive on 127.0.0.1 (real sockets, no mocks)."""

import json
import tempfile
from datetime import UTC, datetime

import numpy as np
import pytest
from dandi_server import DandiStandIn
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries

from spikelab.exceptions import DigestMismatchError, RemoteError
from spikelab.io import export_spikedata_to_nwb
from spikelab.loaders import (
    _dandi_client,
    list_dandi_assets,
    load_recording_from_dandi,
    load_spikedata_from_dandi,
)
from spikelab.spikedata import SpikeData

DANDISET = "000888"
EMBARGOED = "000999"
TRACES = (np.arange(2000 * 3, dtype=np.int16).reshape(2000, 3) % 97) - 48


def sorted_units(offset: float) -> SpikeData:
    return SpikeData(
        [[1.0 + offset, 2.5 + offset], [7.25 + offset]],
        length=100.0,
        neuron_attributes=[
            {
                "unit_id": 4,
                "electrode": 0,
                "location": [1.0, 2.0, 3.0],
                "location_label": "CA1",
                "group_name": "shank0",
            },
            {
                "unit_id": 9,
                "electrode": 1,
                "location": [1.0, 4.0, 3.0],
                "location_label": "CA3",
                "group_name": "shank0",
            },
        ],
        metadata={
            "identifier": f"units-{offset}",
            "session_description": "sorted",
            # what DANDI requires of an uploaded file (exporting warns without it)
            "subject_id": "mouse-1",
            "species": "Mus musculus",
            "sex": "M",
            "age": "P90D",
            "sampling_rate_hz": 30000.0,
        },
    )


def raw_nwb(path):
    nwbfile = NWBFile(
        session_description="raw traces",
        identifier="raw-session",
        session_start_time=datetime(2024, 2, 3, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe", description="d")
    group = nwbfile.create_electrode_group(
        name="shank0", description="s", location="CA1", device=device
    )
    for channel in range(3):
        nwbfile.add_electrode(x=0.0, y=20.0 * channel, z=0.0, location="CA1", group=group)
    region = nwbfile.create_electrode_table_region([0, 1, 2], "all")
    nwbfile.add_acquisition(
        ElectricalSeries(name="ElectricalSeries", data=TRACES, electrodes=region, rate=20000.0)
    )
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    with DandiStandIn(root) as server:
        server.ids = {}
        for name, offset in [
            ("sub-01/sub-01_ses-1_ecephys.nwb", 0.0),
            ("sub-01/sub-01_ses-2_ecephys.nwb", 10.0),
            ("sub-02/sub-02_ses-1_ecephys.nwb", 20.0),
        ]:
            path = export_spikedata_to_nwb(sorted_units(offset), root / f"{offset}.nwb")
            server.ids[name] = server.add_asset(DANDISET, name, path)
        server.ids["raw"] = server.add_asset(
            DANDISET, "sub-03/raw_ecephys.nwb", raw_nwb(root / "raw.nwb")
        )
        server.ids["notes"] = server.add_asset(DANDISET, "notes.txt", b"not an nwb file")
        server.ids["etag-only"] = server.add_asset(
            DANDISET, "sub-04/etag.nwb", root / "0.0.nwb", publish_sha256=False
        )
        server.ids["secret"] = server.add_asset(
            EMBARGOED, "sub-01/secret.nwb", root / "0.0.nwb", embargoed=True
        )
        server.ids["evil"] = server.add_asset(DANDISET, "../../escape.nwb", root / "0.0.nwb")
        yield server


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(_dandi_client, "DEFAULT_BACKOFF_SECONDS", 0.01)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Temporary folders of the code under test go here, so leftovers can be counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def trains(sd):
    return [t.tolist() for t in sd.train]


def test_listing_follows_every_page(archive):
    before = archive.count("api", match="/assets/?")
    assets = list(list_dandi_assets(DANDISET, api_base=archive.api_base, page_size=2))
    assert archive.count("api", match="/assets/?") - before == 4  # 7 assets, 2 per page
    assert sorted(a["path"] for a in assets) == sorted(
        [
            "sub-01/sub-01_ses-1_ecephys.nwb",
            "sub-01/sub-01_ses-2_ecephys.nwb",
            "sub-02/sub-02_ses-1_ecephys.nwb",
            "sub-03/raw_ecephys.nwb",
            "notes.txt",
            "sub-04/etag.nwb",
            "../../escape.nwb",
        ]
    )
    first = next(a for a in assets if a["path"] == "sub-01/sub-01_ses-1_ecephys.nwb")
    assert first["asset_id"] == archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    assert first["download_url"] == f"{archive.api_base}/assets/{first['asset_id']}/download/"
    assert (first["dandiset_id"], first["version"]) == (DANDISET, "draft")
    assert first["size"] > 0 and "modified" in first


def test_listing_names_each_asset_blob(archive):
    assets = list(list_dandi_assets(DANDISET, api_base=archive.api_base))
    with _dandi_client.DandiClient(archive.api_base) as client:
        for asset in assets:
            assert client.blob_url(asset["asset_id"]).endswith(f"/{asset['blob_id']}")
    assert len({asset["blob_id"] for asset in assets}) == len(assets)


def test_listing_is_lazy(archive):
    before = archive.count("api")
    iterator = list_dandi_assets(DANDISET, api_base=archive.api_base, page_size=2)
    assert archive.count("api") == before
    next(iterator)
    assert archive.count("api") == before + 1
    iterator.close()


def test_listing_glob_is_sent_to_the_server(archive):
    assets = list(list_dandi_assets(DANDISET, api_base=archive.api_base, path_glob="*ses-1*"))
    assert sorted(a["path"] for a in assets) == [
        "sub-01/sub-01_ses-1_ecephys.nwb",
        "sub-02/sub-02_ses-1_ecephys.nwb",
    ]
    assert archive.requests[-1].path.count("glob=") == 1


@pytest.mark.parametrize(
    ("dandiset", "match"),
    [("6", "did you mean 000006"), ("12345678", "not a six-digit"), ("abc", "not a six-digit")],
)
def test_dandiset_ids_are_checked_before_any_request(archive, dandiset, match):
    before = archive.count()
    with pytest.raises(ValueError, match=match):
        list_dandi_assets(dandiset, api_base=archive.api_base)
    assert archive.count() == before


def test_dandi_prefix_is_accepted(archive):
    assets = list(list_dandi_assets(f"DANDI:{DANDISET}", api_base=archive.api_base))
    assert len(assets) == 7


def test_unknown_dandiset_is_a_clear_remote_error(archive):
    with pytest.raises(RemoteError, match=r"HTTP 404.*check the dandiset id"):
        list(list_dandi_assets("000404", api_base=archive.api_base))


def test_load_with_a_temporary_download(archive, private_tmp):
    asset_id = archive.ids["sub-01/sub-01_ses-2_ecephys.nwb"]
    sd = load_spikedata_from_dandi(asset_id, dandiset_id=DANDISET, api_base=archive.api_base)
    assert trains(sd) == [[11.0, 12.5], [17.25]]
    assert sd.get_neuron_attribute("location_label") == ["CA1", "CA3"]
    assert sd.metadata["identifier"] == "units-10.0"
    assert sd.metadata["dandi_asset_id"] == asset_id
    assert sd.metadata["dandi_dandiset_id"] == DANDISET
    assert sd.metadata["dandi_version"] == "draft"
    assert sd.metadata["dandi_path"] == "sub-01/sub-01_ses-2_ecephys.nwb"
    assert list(sd.metadata["dandi_digest"]) == ["dandi:sha2-256"]
    assert sd.metadata["source_reference"] == (
        f"{archive.api_base}/dandisets/{DANDISET}/versions/draft/assets/{asset_id}/"
    )
    assert "downloaded_path" not in sd.metadata
    assert list(private_tmp.iterdir()) == []  # the temporary download is gone


def test_temporary_download_is_removed_on_failure(archive, private_tmp):
    with pytest.raises(ValueError, match="not a readable NWB/HDF5 file"):
        load_spikedata_from_dandi(archive.ids["notes"], api_base=archive.api_base)
    assert list(private_tmp.iterdir()) == []


def test_download_dir_keeps_the_file_and_reuses_it(archive, tmp_path):
    asset_id = archive.ids["sub-02/sub-02_ses-1_ecephys.nwb"]
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    expected = tmp_path / "sub-02" / "sub-02_ses-1_ecephys.nwb"
    assert sd.metadata["downloaded_path"] == str(expected) and expected.is_file()
    assert sorted(p.name for p in expected.parent.iterdir()) == [expected.name]  # no partials
    blob_requests = archive.count("blob")
    again = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(again) == trains(sd) == [[21.0, 22.5], [27.25]]
    assert archive.count("blob") == blob_requests  # verified local copy, nothing downloaded


def test_asset_url_is_accepted(archive, tmp_path):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    url = f"{archive.api_base}/assets/{asset_id}/download/"
    sd = load_spikedata_from_dandi(url, download_dir=tmp_path)  # api_base comes from the URL
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    with pytest.raises(ValueError, match="neither a DANDI asset UUID nor an asset URL"):
        load_spikedata_from_dandi("https://example.org/file.nwb", api_base=archive.api_base)


def test_etag_is_verified_when_no_sha256_is_published(archive, tmp_path):
    sd = load_spikedata_from_dandi(
        archive.ids["etag-only"], api_base=archive.api_base, download_dir=tmp_path
    )
    assert list(sd.metadata["dandi_digest"]) == ["dandi:dandi-etag"]
    assert trains(sd) == [[1.0, 2.5], [7.25]]


def test_token_goes_to_the_api_only(archive, tmp_path, monkeypatch):
    monkeypatch.delenv("DANDI_API_TOKEN", raising=False)
    with pytest.raises(RemoteError, match=r"HTTP 401.*DANDI_API_TOKEN") as refused:
        load_spikedata_from_dandi(archive.ids["secret"], api_base=archive.api_base)
    assert refused.value.status == 401
    with pytest.raises(RemoteError, match="HTTP 403.*token was refused") as wrong:
        load_spikedata_from_dandi(
            archive.ids["secret"], api_base=archive.api_base, api_token="wrong-token"
        )
    assert "wrong-token" not in str(wrong.value)
    start = len(archive.requests)
    monkeypatch.setenv("DANDI_API_TOKEN", archive.token)
    sd = load_spikedata_from_dandi(
        archive.ids["secret"], api_base=archive.api_base, download_dir=tmp_path
    )
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    seen = archive.requests[start:]
    api = [r for r in seen if r.server == "api"]
    blob = [r for r in seen if r.server == "blob"]
    assert api and blob
    assert all(r.headers.get("Authorization") == f"token {archive.token}" for r in api)
    assert not any("Authorization" in r.headers for r in blob)
    assert archive.token not in json.dumps(sd.metadata, default=str)
    assert archive.token not in repr(sd)


def test_broken_transfer_resumes_with_range(archive, tmp_path):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    archive.inject("reset", match="/blobs/")
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    blob = [r for r in archive.requests[start:] if r.server == "blob"]
    assert len(blob) == 2
    assert "Range" not in blob[0].headers
    assert blob[1].headers["Range"].startswith("bytes=") and blob[1].headers["Range"] != "bytes=0-"


def test_truncated_body_is_completed(archive, tmp_path):
    archive.inject("truncate", match="/blobs/")
    sd = load_spikedata_from_dandi(
        archive.ids["sub-02/sub-02_ses-1_ecephys.nwb"],
        api_base=archive.api_base,
        download_dir=tmp_path,
    )
    assert trains(sd) == [[21.0, 22.5], [27.25]]


def test_server_ignoring_range_restarts_cleanly(archive, tmp_path):
    archive.inject("reset", match="/blobs/")
    archive.inject("no-range", match="/blobs/")
    sd = load_spikedata_from_dandi(
        archive.ids["sub-01/sub-01_ses-2_ecephys.nwb"],
        api_base=archive.api_base,
        download_dir=tmp_path,
    )
    assert trains(sd) == [[11.0, 12.5], [17.25]]


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_transient_statuses_are_retried(archive, tmp_path, status):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    archive.inject(status, times=2, match=f"/assets/{asset_id}/")
    before = archive.count("api", match=f"/assets/{asset_id}/")
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    # two failures + detail + download redirect
    assert archive.count("api", match=f"/assets/{asset_id}/") - before == 4


def test_persistent_failure_gives_up_with_a_clear_error(archive):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    archive.inject("503", times=5, match=f"/assets/{asset_id}/")
    with pytest.raises(RemoteError, match=r"GET .*/assets/.* answered HTTP 503 after 5 attempts"):
        load_spikedata_from_dandi(asset_id, api_base=archive.api_base)


def test_digest_mismatch_keeps_nothing(archive, tmp_path):
    path = tmp_path / "x.nwb"
    asset_id = archive.add_asset(
        DANDISET, "sub-09/corrupt.nwb", export_spikedata_to_nwb(sorted_units(0.0), path)
    )
    archive.corrupt_digest(asset_id)
    downloads = tmp_path / "downloads"
    with pytest.raises(DigestMismatchError, match=r"corrupt.nwb is corrupt: dandi:sha2-256"):
        load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=downloads)
    assert [p for p in downloads.rglob("*") if p.is_file()] == []


def test_path_traversal_is_refused(archive, tmp_path):
    downloads = tmp_path / "downloads"
    with pytest.raises(ValueError, match="refusing asset path '../../escape.nwb'"):
        load_spikedata_from_dandi(
            archive.ids["evil"], api_base=archive.api_base, download_dir=downloads
        )
    assert [p for p in tmp_path.rglob("*.nwb")] == []


def test_raw_asset_metadata_triage(archive):
    sd = load_spikedata_from_dandi(
        archive.ids["raw"], api_base=archive.api_base, allow_no_units=True
    )
    assert sd.N == 0
    assert sd.metadata["identifier"] == "raw-session"
    assert sd.metadata["sampling_rate_hz"] == 20000.0
    assert sd.metadata["duration_seconds"] == 0.1
    assert set(sd.metadata["electrodes_by_channel"]) == {0, 1, 2}
    with pytest.raises(ValueError, match="has no Units table"):
        load_spikedata_from_dandi(archive.ids["raw"], api_base=archive.api_base)


def test_raw_asset_to_zarr(archive, tmp_path, private_tmp):
    import spikeinterface.core as si

    destination = tmp_path / "out" / "raw.zarr"
    result = load_recording_from_dandi(
        archive.ids["raw"], destination, dandiset_id=DANDISET, api_base=archive.api_base
    )
    assert result["zarr_path"] == str(destination)
    assert (result["sampling_rate_hz"], result["n_channels"], result["n_samples"]) == (
        20000.0,
        3,
        2000,
    )
    assert result["duration_seconds"] == 0.1
    assert result["identifier"] == "raw-session"
    assert result["dandi_dandiset_id"] == DANDISET
    assert "downloaded_nwb_path" not in result
    sidecar = json.loads((tmp_path / "out" / "raw.zarr.json").read_text())
    assert sidecar == json.loads(json.dumps(result))
    for reader in (si.load, si.read_zarr):
        recording = reader(destination)
        np.testing.assert_array_equal(recording.get_traces(), TRACES)
    assert sorted(p.name for p in destination.parent.iterdir()) == ["raw.zarr", "raw.zarr.json"]
    assert list(private_tmp.iterdir()) == []
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        load_recording_from_dandi(archive.ids["raw"], destination, api_base=archive.api_base)
    again = load_recording_from_dandi(
        archive.ids["raw"], destination, api_base=archive.api_base, overwrite=True, keep_nwb=True
    )
    kept = again["downloaded_nwb_path"]
    assert kept.endswith("sub-03/raw_ecephys.nwb")
    np.testing.assert_array_equal(si.read_zarr(destination).get_traces(), TRACES)


def test_failed_conversion_leaves_no_zarr(archive, tmp_path):
    destination = tmp_path / "sorted.zarr"
    with pytest.raises(ValueError, match="no ElectricalSeries SpikeInterface can open"):
        load_recording_from_dandi(
            archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"],
            destination,
            api_base=archive.api_base,
        )
    assert list(tmp_path.iterdir()) == []
