"""DANDI loaders against the stand-in archive on 127.0.0.1 (real sockets, no mocks)."""

import hashlib
import json
import os
import re
import tempfile
import time

import numpy as np
import pytest
from nwb_fixtures import raw_traces_nwbfile, write

from spikelab.exceptions import (
    DigestMismatchError,
    FileFormatError,
    RemoteError,
    UnsafeRemoteDataError,
)
from spikelab.ids import DandisetRef, normalize_version
from spikelab.io import export_spikedata_to_nwb
from spikelab.loaders import (
    list_dandi_assets,
    load_recording_from_dandi,
    load_spikedata_from_dandi,
)
from spikelab.loaders.dandi import DandiAsset, RefusedAsset, _records
from spikelab.loaders.dandi import _client as _dandi_client
from spikelab.loaders.dandi._download import expire_stale_downloads, partial_max_age_seconds
from spikelab.spikedata import SpikeData
from spikelab.testing import DandiStandIn

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
    return write(raw_traces_nwbfile(TRACES, 20000.0, "raw-session"), path)


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


def test_the_client_lists_assets_with_their_records(archive):
    """One page gives every asset's digest and blob URL: equal to what describe answers."""
    where = DandisetRef.parse(DANDISET)
    with _dandi_client.DandiClient(archive.api_base) as client:
        before = archive.count("api")
        listed = {a.asset_id: a for a in client.assets(where) if isinstance(a, DandiAsset)}
        assert archive.count("api") - before == 1
        name = "sub-01/sub-01_ses-1_ecephys.nwb"
        asset = listed[archive.ids[name]]
        described = client.describe(asset.asset_id, dandiset_id=DANDISET)
    assert asset.described and (asset.path, asset.dandiset_id) == (name, DANDISET)
    assert asset.digests == described.digests and asset.digest[0] == "dandi:sha2-256"
    assert asset.blob_url == described.blob_url and asset.blob_url.endswith(asset.blob_id)
    assert asset.size == described.size > 0


def test_a_listing_without_records_is_completed_one_request_an_asset(archive):
    where = DandisetRef.parse(DANDISET)
    with _dandi_client.DandiClient(archive.api_base) as client:
        asset = next(a for a in client.assets(where, records=False) if a.path == "notes.txt")
        assert asset.asset_id == archive.ids["notes"]
        assert not asset.described and asset.digests == () and asset.blob_url is None
        before = archive.count("api", match=f"/assets/{asset.asset_id}/")
        complete = client.complete(asset)
        assert archive.count("api", match=f"/assets/{asset.asset_id}/") == before + 1
        assert client.complete(complete) is complete  # described: no request
    assert complete.described and complete.blob_id == asset.blob_id
    sha = hashlib.sha256(b"not an nwb file").hexdigest()
    assert dict(complete.digests)["dandi:sha2-256"] == sha


def test_a_listed_record_of_another_asset_is_refused(archive, monkeypatch):
    where = DandisetRef.parse(DANDISET)
    entry = {"asset_id": archive.ids["notes"], "path": "notes.txt", "size": 15}
    entry["metadata"] = {"identifier": archive.ids["etag-only"], "digest": {}}
    with _dandi_client.DandiClient(archive.api_base) as client:
        monkeypatch.setattr(client, "paginate", lambda path, params: iter([entry]))
        (refused,) = client.assets(where)
    assert isinstance(refused, RefusedAsset) and refused.asset_id.startswith("refused-")
    assert "metadata record" in refused.problem and refused.path == "notes.txt"


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
    # two failures + detail; the public blob is read from the record's URL, no redirect
    assert archive.count("api", match=f"/assets/{asset_id}/") - before == 3


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
    stale = downloads / "sub-09" / "corrupt.nwb"  # an older file at the destination goes too
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old bytes")
    start = len(archive.requests)
    with pytest.raises(
        DigestMismatchError,
        match=r"corrupt.nwb is corrupt: dandi:sha2-256 .*also on a fresh second download",
    ):
        load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=downloads)
    assert [p for p in downloads.rglob("*") if p.is_file()] == []
    blob = [r for r in archive.requests[start:] if r.server == "blob"]
    assert len(blob) == 2 and not any("Range" in r.headers for r in blob)


def blob_requests(archive, asset_id, start):
    key = archive._asset(asset_id).blob_key
    return [r for r in archive.requests[start:] if r.server == "blob" and key in r.path]


def test_a_corrupted_transfer_is_caught_by_one_fresh_download(archive, tmp_path):
    asset_id = archive.ids["sub-01/sub-01_ses-2_ecephys.nwb"]
    archive.inject("corrupt", times=1, match=archive._asset(asset_id).blob_key)
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(sd) == [[11.0, 12.5], [17.25]]
    blob = blob_requests(archive, asset_id, start)
    assert len(blob) == 2 and "Range" not in blob[1].headers  # started over, not resumed
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "sub-01_ses-2_ecephys.nwb"
    ]


def test_an_always_corrupted_transfer_fails_after_two_downloads(archive, tmp_path):
    asset_id = archive.ids["sub-01/sub-01_ses-2_ecephys.nwb"]
    archive.inject("corrupt", times=10, match=archive._asset(asset_id).blob_key)
    start = len(archive.requests)
    try:
        with pytest.raises(DigestMismatchError, match="sub-01_ses-2_ecephys.nwb is corrupt"):
            load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    finally:
        archive.clear_faults()
    assert len(blob_requests(archive, asset_id, start)) == 2
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_partial_download_survives_a_failed_call_and_is_resumed(archive, tmp_path):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    archive.inject("reset", times=5, match="/blobs/")  # every attempt of the first call
    with pytest.raises(RemoteError, match="kept failing"):
        load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    (partial,) = tmp_path.rglob("*.partial")
    kept = partial.stat().st_size
    assert 0 < kept < archive._asset(asset_id).size
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    (blob,) = blob_requests(archive, asset_id, start)
    assert blob.headers["Range"] == f"bytes={kept}-"
    assert list(tmp_path.rglob("*.partial*")) == []


def test_an_old_partial_download_is_started_afresh(archive, tmp_path, monkeypatch):
    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    archive.inject("reset", times=5, match="/blobs/")
    with pytest.raises(RemoteError, match="kept failing"):
        load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    (partial,) = tmp_path.rglob("*.partial")
    monkeypatch.setenv("SPIKELAB_PARTIAL_MAX_AGE_HOURS", "2")
    three_hours_ago = time.time() - 3 * 3600
    os.utime(partial, (three_hours_ago, three_hours_ago))
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(asset_id, api_base=archive.api_base, download_dir=tmp_path)
    assert trains(sd) == [[1.0, 2.5], [7.25]]
    (blob,) = blob_requests(archive, asset_id, start)
    assert "Range" not in blob.headers


def age(path, hours):
    moment = time.time() - hours * 3600
    os.utime(path, (moment, moment))


def test_expire_stale_downloads_removes_only_old_leftovers(tmp_path):
    old, new = tmp_path / "old" / "sub", tmp_path / "new"
    old.mkdir(parents=True)
    new.mkdir()
    names = ["a.nwb.partial", "a.nwb.partial.json", ".b.json.1a2b.part", "kept.nwb"]
    for folder in (old, new):
        for name in names:
            (folder / name).write_bytes(b"x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "c.partial").write_bytes(b"not ours")
    age(outside / "c.partial", 100)
    (tmp_path / "link").symlink_to(outside)  # never followed
    for path in [*old.iterdir(), old, old.parent]:
        age(path, 100)
    removed = expire_stale_downloads(tmp_path, max_age_seconds=3600)
    assert sorted(p.name for p in removed) == sorted(names[:3])
    assert sorted(p.name for p in old.iterdir()) == ["kept.nwb"]  # so its folder stays
    assert sorted(p.name for p in new.iterdir()) == sorted(names)
    assert (outside / "c.partial").read_bytes() == b"not ours"
    (old / "kept.nwb").unlink()
    age(old, 100)
    age(old.parent, 100)
    assert expire_stale_downloads(tmp_path, max_age_seconds=3600) == [old, old.parent]
    assert expire_stale_downloads(tmp_path / "missing", max_age_seconds=0) == []


@pytest.mark.parametrize(("value", "seconds"), [(None, 72 * 3600.0), ("0.5", 1800.0), ("0", 0.0)])
def test_partial_max_age_comes_from_the_environment(monkeypatch, value, seconds):
    if value is None:
        monkeypatch.delenv("SPIKELAB_PARTIAL_MAX_AGE_HOURS", raising=False)
    else:
        monkeypatch.setenv("SPIKELAB_PARTIAL_MAX_AGE_HOURS", value)
    assert partial_max_age_seconds() == seconds


@pytest.mark.parametrize("value", ["-1", "soon", "nan"])
def test_a_bad_partial_max_age_is_refused(monkeypatch, value):
    monkeypatch.setenv("SPIKELAB_PARTIAL_MAX_AGE_HOURS", value)
    with pytest.raises(ValueError, match=rf"SPIKELAB_PARTIAL_MAX_AGE_HOURS='{value}' is not a"):
        partial_max_age_seconds()


def test_path_traversal_is_refused(archive, tmp_path):
    downloads = tmp_path / "downloads"
    with pytest.raises(ValueError, match="refusing asset path '../../escape.nwb'"):
        load_spikedata_from_dandi(
            archive.ids["evil"], api_base=archive.api_base, download_dir=downloads
        )
    assert [p for p in tmp_path.rglob("*.nwb")] == []


CRAFTED = "000777"
UUID = "0a1b2c3d-0000-4000-8000-00000000000f"
BAD_IDS = ["../../victim", "/etc/cron.d/spikelab", "not-a-uuid", "", "..", "0" * 36]


@pytest.fixture(scope="module")
def crafted_listing(archive):
    """A dandiset whose listing mixes one good asset with crafted asset ids."""
    good = archive.add_asset(CRAFTED, "sub-1/good.nwb", b"good")
    for number, bad in enumerate(BAD_IDS):
        archive.add_asset(CRAFTED, f"sub-1/bad{number}.nwb", b"bad", asset_id=bad)
    return good


def test_listing_refuses_a_crafted_asset_id(archive, crafted_listing):
    with pytest.raises(UnsafeRemoteDataError) as raised:
        list(list_dandi_assets(CRAFTED, api_base=archive.api_base))
    assert str(raised.value) == (
        f"the DANDI server {archive.api_base} sent asset_id '../../victim', which is not a "
        "UUID; spikelab refuses to use it (it could name a path outside the cache): check "
        "that --api-base points at a DANDI archive you trust"
    )


def test_listing_can_report_crafted_entries_and_go_on(archive, crafted_listing):
    entries = list(list_dandi_assets(CRAFTED, api_base=archive.api_base, on_unsafe="report"))
    good = [e for e in entries if "refused" not in e]
    refused = [e for e in entries if "refused" in e]
    assert [e["asset_id"] for e in good] == [crafted_listing]
    assert sorted(e["path"] for e in refused) == sorted(
        f"sub-1/bad{number}.nwb" for number in range(len(BAD_IDS))
    )
    for entry in refused:
        number = int(entry["path"][len("sub-1/bad") : -len(".nwb")])
        assert f"sent asset_id {BAD_IDS[number]!r}, which is not a UUID" in entry["refused"]
        assert re.fullmatch(r"refused-[0-9a-f]{16}", entry["asset_id"])
        assert (entry["dandiset_id"], entry["version"]) == (CRAFTED, "draft")
    assert len({e["asset_id"] for e in refused}) == len(BAD_IDS)


def test_listing_refuses_crafted_blob_ids(archive):
    archive.add_asset("000778", "sub-1/a.nwb", b"a", blob_id="../../../etc")
    with pytest.raises(UnsafeRemoteDataError, match=r"sent blob_id '../../../etc', which is not"):
        list(list_dandi_assets("000778", api_base=archive.api_base))


def test_listing_names_zarr_assets(archive):
    asset_id = archive.add_zarr_asset("000779", "sub-1/sub-1.nwb.zarr")
    (asset,) = list(list_dandi_assets("000779", api_base=archive.api_base))
    assert asset["zarr_id"] == archive._asset(asset_id).zarr_id and "blob_id" not in asset


def test_loading_a_zarr_asset_is_a_clear_error(archive):
    asset_id = archive.add_zarr_asset("000779", "sub-2/sub-2.nwb.zarr")
    for stream in (False, True):
        with pytest.raises(FileFormatError, match=r"sub-2/sub-2.nwb.zarr\) is a Zarr asset"):
            load_spikedata_from_dandi(asset_id, api_base=archive.api_base, stream=stream)


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        (
            "asset_id",
            "0A1B2C3D-0000-4000-8000-00000000000F",
            "0a1b2c3d-0000-4000-8000-00000000000f",
        ),
        ("blob_id", "0a1b2c3d-0000-4000-8000-00000000000f", "0a1b2c3d-0000-4000-8000-00000000000f"),
        ("zarr_id", "0a1b2c3d-0000-4000-8000-00000000000f", "0a1b2c3d-0000-4000-8000-00000000000f"),
        ("dandiset_id", "000123", "000123"),
        ("version", "draft", "draft"),
        ("version", "0.231012.1234", "0.231012.1234"),
    ],
)
def test_server_ids_of_the_right_shape_are_accepted(kind, value, expected):
    assert _records.check_server_id(kind, value, "http://h/api") == expected


@pytest.mark.parametrize(
    ("kind", "value", "shape"),
    [
        ("asset_id", "../x", "a UUID"),
        ("asset_id", None, "a UUID"),
        ("asset_id", f"{UUID}/..", "a UUID"),
        ("blob_id", "/tmp/x", "a UUID"),
        ("zarr_id", f"{UUID}\n", "a UUID"),
        ("dandiset_id", "../000123", "a six-digit dandiset id"),
        ("version", "../../draft", "'draft' or a published version like 0.231012.1234"),
        ("version", "0.231012.1234/x", "'draft' or a published version like 0.231012.1234"),
    ],
)
def test_server_ids_of_another_shape_are_refused(kind, value, shape):
    with pytest.raises(
        UnsafeRemoteDataError,
        match=re.escape(
            f"the DANDI server http://h/api sent {kind} {value!r}, which is not {shape}"
        ),
    ):
        _records.check_server_id(kind, value, "http://h/api")


@pytest.mark.parametrize("version", ["0.231012.0", "0.231012.1234", "draft"])
def test_versions_of_the_right_shape_are_accepted(version):
    assert normalize_version(version) == version


def test_a_malformed_version_is_refused_before_any_request(archive):
    before = archive.count()
    with pytest.raises(ValueError, match=r"dandiset version '../..' is neither 'draft' nor"):
        list_dandi_assets(DANDISET, version="../..", api_base=archive.api_base)
    assert archive.count() == before


def test_the_token_goes_only_under_the_api_base():
    client = _dandi_client.DandiClient("http://127.0.0.1:8000/api", "t")
    assert client.is_api_url("http://127.0.0.1:8000/api/assets/")
    assert client.is_api_url("http://127.0.0.1:8000/api?page=2")
    assert not client.is_api_url("http://127.0.0.1:8000/api-other/assets/")
    assert not client.is_api_url("http://127.0.0.1:80001/api/")


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
    requests_before = archive.count()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        load_recording_from_dandi(archive.ids["raw"], destination, api_base=archive.api_base)
    assert archive.count() == requests_before  # refused before any request
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


# ---------------------------------------------------------------- the asset record


def metadata_requests(archive, asset_id):
    """GETs of an asset's metadata record (its download endpoint shares the prefix)."""
    prefix = f"/assets/{asset_id}/"
    return archive.count("api", "GET", match=prefix) - archive.count(
        "api", match=prefix + "download/"
    )


def test_describe_returns_one_frozen_typed_record(archive):
    import dataclasses
    import pickle

    asset_id = archive.ids["sub-01/sub-01_ses-1_ecephys.nwb"]
    with _dandi_client.DandiClient(archive.api_base) as client:
        record = client.describe(asset_id.upper(), dandiset_id=DANDISET)
    blob = archive._asset(asset_id)
    assert (record.asset_id, record.path, record.size) == (
        asset_id,
        "sub-01/sub-01_ses-1_ecephys.nwb",
        blob.size,
    )
    sha = dict(record.digests)["dandi:sha2-256"]
    assert record.digest == ("dandi:sha2-256", sha)
    assert record.published_digest == {"dandi:sha2-256": sha}
    assert record.blob_url.endswith(blob.blob_key) and record.blob_url in record.content_urls
    assert record.download_url == f"{archive.api_base}/assets/{asset_id}/download/"
    assert record.source_reference == (
        f"{archive.api_base}/dandisets/{DANDISET}/versions/draft/assets/{asset_id}/"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.size = 0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(record)) == record  # it travels between Prefect tasks
    with _dandi_client.DandiClient(archive.api_base) as client:
        etag_only = client.describe(archive.ids["etag-only"])
    assert [kind for kind, _ in etag_only.digests] == ["dandi:dandi-etag"]  # no sha2-256
    assert etag_only.digest == etag_only.digests[0]


@pytest.mark.parametrize("stream", [True, False])
def test_a_described_asset_is_loaded_without_asking_again(archive, tmp_path, stream):
    asset_id = archive.ids["sub-01/sub-01_ses-2_ecephys.nwb"]
    by_id = load_spikedata_from_dandi(
        asset_id,
        dandiset_id=f"DANDI:{DANDISET}",
        api_base=archive.api_base,
        download_dir=tmp_path / "by-id",
        stream=stream,
    )
    with _dandi_client.DandiClient(archive.api_base) as client:
        record = client.describe(asset_id, dandiset_id=DANDISET)
    before = metadata_requests(archive, asset_id)
    sd = load_spikedata_from_dandi(
        record, api_base="http://127.0.0.1:9/ignored", download_dir=tmp_path / "rec", stream=stream
    )
    assert metadata_requests(archive, asset_id) == before
    assert [t.tolist() for t in sd.train] == [[11.0, 12.5], [17.25]]
    for field in ("dandi_asset_id", "dandi_dandiset_id", "dandi_path", "dandi_digest"):
        assert sd.metadata[field] == by_id.metadata[field]
    assert sd.metadata["dandi_dandiset_id"] == DANDISET
    assert sd.metadata["transfer"] == ("streamed" if stream else "downloaded")


def test_a_described_zarr_asset_is_refused_before_any_transfer(archive):
    with _dandi_client.DandiClient(archive.api_base) as client:
        record = client.describe(archive.add_zarr_asset(DANDISET, "sub-9/sub-9.nwb.zarr"))
    before = archive.count()
    with pytest.raises(FileFormatError, match=r"sub-9/sub-9.nwb.zarr\) is a Zarr asset"):
        load_spikedata_from_dandi(record, stream=True)
    assert archive.count() == before
