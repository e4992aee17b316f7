"""The DANDI stand-in itself, exercised with requests over real sockets."""

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from spikelab.testing import DandiStandIn, dandi_etag
from spikelab.testing import dandi_archive as dandi_server

DANDISET = "000123"
PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def dandi(tmp_path):
    with DandiStandIn(tmp_path) as stand_in:
        yield stand_in


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


@pytest.fixture
def asset_id(dandi):
    return dandi.add_asset(DANDISET, "sub-01/sub-01_ecephys.nwb", PAYLOAD)


def listing_url(dandi, dandiset=DANDISET, version="draft"):
    return f"{dandi.api_base}/dandisets/{dandiset}/versions/{version}/assets/"


def blob_url(dandi, session, asset_id):
    response = session.get(f"{dandi.api_base}/assets/{asset_id}/download/", allow_redirects=False)
    return response.headers["Location"]


# ------------------------------------------------------------------------ listing


def test_listing_pages_follow_next_and_previous(dandi, session):
    paths = [f"sub-{i:02d}/sub-{i:02d}_ecephys.nwb" for i in (3, 1, 5, 2, 4)]
    ids = {p: dandi.add_asset(DANDISET, p, p.encode()) for p in paths}
    url = listing_url(dandi) + "?page_size=2&glob=*.nwb"
    seen, pages = [], []
    while url:
        page = session.get(url).json()
        pages.append(page)
        seen.extend(page["results"])
        url = page["next"]

    assert [p["count"] for p in pages] == [5, 5, 5]
    assert [len(p["results"]) for p in pages] == [2, 2, 1]
    assert [r["path"] for r in seen] == sorted(paths)
    assert all(r["asset_id"] == ids[r["path"]] for r in seen)
    first = seen[0]
    assert set(first) == {"asset_id", "blob", "zarr", "path", "size", "created", "modified"}
    assert first["zarr"] is None and first["size"] == len(first["path"])
    assert first["created"].endswith("Z")

    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    second_next = urlsplit(pages[1]["next"])
    assert f"{second_next.scheme}://{second_next.netloc}/api" == dandi.api_base
    assert parse_qs(second_next.query) == {"page_size": ["2"], "glob": ["*.nwb"], "page": ["3"]}
    assert parse_qs(urlsplit(pages[1]["previous"]).query)["page"] == ["1"]


@pytest.mark.parametrize(
    ("glob", "expected"),
    [
        ("*.nwb", ["a/X.NWB", "a/b.nwb", "c.nwb"]),
        ("a/*", ["a/X.NWB", "a/b.nwb", "a/q?.txt"]),
        ("A/X.nwb", ["a/X.NWB"]),
        ("a/q?.txt", ["a/q?.txt"]),
        ("a/q[?].txt", []),
        (".nwb", []),
        ("c", []),
    ],
)
def test_glob_matches_whole_path_case_insensitively_with_star_only(dandi, session, glob, expected):
    for path in ["a/X.NWB", "a/b.nwb", "a/q?.txt", "c.nwb", "c.nwb.bak"]:
        dandi.add_asset(DANDISET, path, b"x")
    response = session.get(listing_url(dandi), params={"glob": glob})
    assert [r["path"] for r in response.json()["results"]] == expected


def test_listing_errors(dandi, session, asset_id):
    url = listing_url(dandi)
    assert session.get(url, params={"page_size": 1000}).status_code == 200
    assert session.get(url, params={"page_size": 1001}).status_code == 400
    assert session.get(url, params={"page": 2}).status_code == 404
    for bad in (listing_url(dandi, dandiset="000999"), listing_url(dandi, version="0.1.0")):
        response = session.get(bad)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}


def test_page_size_max_is_configurable(tmp_path, session):
    with DandiStandIn(tmp_path, page_size_max=3) as dandi:
        dandi.add_asset(DANDISET, "a.nwb", b"")
        assert session.get(listing_url(dandi), params={"page_size": 4}).status_code == 400


def test_versions_are_separate_and_a_new_upload_replaces_the_path(dandi, session):
    old = dandi.add_asset(DANDISET, "a.nwb", b"old")
    published = dandi.add_asset(DANDISET, "a.nwb", b"v1", version="0.230101.0001")
    new = dandi.add_asset(DANDISET, "a.nwb", b"new")
    draft = session.get(listing_url(dandi)).json()["results"]
    release = session.get(listing_url(dandi, version="0.230101.0001")).json()["results"]
    assert [r["asset_id"] for r in draft] == [new]
    assert [r["asset_id"] for r in release] == [published]
    assert session.get(f"{dandi.api_base}/assets/{old}/").status_code == 200


# ------------------------------------------------------------------------ metadata


def test_asset_metadata_from_both_endpoints(dandi, session, asset_id):
    by_id = session.get(f"{dandi.api_base}/assets/{asset_id}/").json()
    in_version = f"{listing_url(dandi)}{asset_id}/"
    assert session.get(in_version).json() == by_id
    assert by_id["identifier"] == asset_id
    assert by_id["path"] == "sub-01/sub-01_ecephys.nwb"
    assert by_id["contentSize"] == len(PAYLOAD)
    assert by_id["encodingFormat"] == "application/x-nwb"
    assert by_id["blobDateModified"].endswith("Z")
    assert by_id["digest"] == {
        "dandi:dandi-etag": dandi_etag(PAYLOAD),
        "dandi:sha2-256": hashlib.sha256(PAYLOAD).hexdigest(),
    }
    download, blob = by_id["contentUrl"]
    assert download == f"{dandi.api_base}/assets/{asset_id}/download/"
    assert blob.startswith(dandi.blob_base + "/")
    assert session.get(blob).content == PAYLOAD


def test_metadata_not_found_and_wrong_version(dandi, session, asset_id):
    assert session.get(f"{dandi.api_base}/assets/nope/").status_code == 404
    wrong_version = f"{listing_url(dandi, version='0.1.0')}{asset_id}/"
    assert session.get(wrong_version).status_code == 404
    assert session.get(f"{dandi.api_base}/nothing/here/").status_code == 404


def test_sha256_can_be_unpublished_and_digests_corrupted(dandi, session):
    asset_id = dandi.add_asset(DANDISET, "a.nwb", PAYLOAD, publish_sha256=False)
    url = f"{dandi.api_base}/assets/{asset_id}/"
    assert session.get(url).json()["digest"] == {"dandi:dandi-etag": dandi_etag(PAYLOAD)}

    other = dandi.add_asset(DANDISET, "b.nwb", PAYLOAD)
    dandi.corrupt_digest(other)
    digest = session.get(f"{dandi.api_base}/assets/{other}/").json()["digest"]
    etag, sha = digest["dandi:dandi-etag"], digest["dandi:sha2-256"]
    assert etag != dandi_etag(PAYLOAD) and etag.endswith("-1") and len(etag) == 34
    assert sha != hashlib.sha256(PAYLOAD).hexdigest() and len(sha) == 64
    with pytest.raises(KeyError):
        dandi.corrupt_digest("nope")


# ------------------------------------------------------------------------ download and blobs


def test_download_redirects_to_the_blob_server(dandi, session, asset_id):
    for method in ("GET", "HEAD"):
        url = f"{dandi.api_base}/assets/{asset_id}/download/"
        response = session.request(method, url, allow_redirects=False)
        assert response.status_code == 302
        location = response.headers["Location"]
        assert location.startswith(dandi.blob_base + "/")
        assert urlsplit(location).port != urlsplit(dandi.api_base).port

    followed = session.get(f"{dandi.api_base}/assets/{asset_id}/download/")
    assert followed.status_code == 200
    assert followed.content == PAYLOAD
    assert followed.headers["Accept-Ranges"] == "bytes"
    assert int(followed.headers["Content-Length"]) == len(PAYLOAD)
    assert [r.server for r in dandi.requests[-2:]] == ["api", "blob"]


@pytest.mark.parametrize("source", ["bytes", "file"])
def test_blob_ranges(dandi, session, tmp_path, source, monkeypatch):
    monkeypatch.setattr(dandi_server, "CHUNK_SIZE", 1000)  # several chunks per answer
    content = PAYLOAD
    if source == "file":
        content = tmp_path / "blob.bin"
        content.write_bytes(PAYLOAD)
    url = blob_url(dandi, session, dandi.add_asset(DANDISET, "a.nwb", content))
    size = len(PAYLOAD)

    whole = session.get(url)
    assert (whole.status_code, whole.content) == (200, PAYLOAD)

    middle = session.get(url, headers={"Range": "bytes=100-2599"})
    assert middle.status_code == 206
    assert middle.content == PAYLOAD[100:2600]
    assert middle.headers["Content-Range"] == f"bytes 100-2599/{size}"

    tail = session.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert (tail.status_code, tail.content) == (206, PAYLOAD[-10:])
    assert tail.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"

    past_end = session.get(url, headers={"Range": f"bytes=10-{size + 50}"})
    assert (past_end.status_code, past_end.content) == (206, PAYLOAD[10:])

    unsatisfiable = session.get(url, headers={"Range": f"bytes={size}-"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["Content-Range"] == f"bytes */{size}"

    head = session.head(url, headers={"Range": "bytes=0-9"})
    assert head.status_code == 206 and head.headers["Content-Length"] == "10"
    assert session.head(url).headers["Content-Length"] == str(size)


def test_unknown_blob_is_404(dandi, session):
    assert session.get(f"{dandi.blob_base}/abc/def/nothing").status_code == 404


# ------------------------------------------------------------------------ embargo


def test_embargo_needs_the_token(dandi, session):
    asset_id = dandi.add_asset(DANDISET, "a.nwb", PAYLOAD, embargoed=True)
    urls = [
        listing_url(dandi),
        f"{dandi.api_base}/assets/{asset_id}/",
        f"{listing_url(dandi)}{asset_id}/",
        f"{dandi.api_base}/assets/{asset_id}/download/",
    ]
    good = {"Authorization": f"token {dandi.token}"}
    bad = {"Authorization": "token wrong"}
    for url in urls:
        missing = session.get(url, allow_redirects=False)
        assert missing.status_code == 401
        assert missing.json() == {"detail": "Authentication credentials were not provided."}
        assert session.get(url, headers=bad, allow_redirects=False).status_code == 403
        assert session.get(url, headers=good, allow_redirects=False).status_code in (200, 302)

    # requests drops the token when the redirect leaves for the blob host; the blob still loads
    followed = session.get(urls[-1], headers=good)
    assert followed.content == PAYLOAD
    assert "Authorization" not in dandi.requests[-1].headers
    assert dandi.requests[-1].server == "blob"
    # The blob URL the metadata lists is private: only the redirect's signed URL opens it.
    listed = session.get(urls[1], headers=good).json()["contentUrl"][1]
    assert session.get(listed).status_code == 403
    assert session.get(followed.url).status_code == 200 and followed.url != listed


def test_bandwidth_is_shared_by_every_blob_answer(dandi, session):
    asset_id = dandi.add_asset(DANDISET, "big.nwb", bytes(1_000_000))
    url = blob_url(dandi, session, asset_id)
    dandi.bandwidth_bytes_per_second = 10_000_000
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # two answers at once share the one link
        sizes = list(pool.map(lambda _: len(requests.get(url).content), range(2)))
    assert sizes == [1_000_000, 1_000_000]
    assert time.monotonic() - started >= 0.19  # 2 MB over a 10 MB/s link


def test_custom_token(tmp_path, session):
    with DandiStandIn(tmp_path, token="other") as dandi:
        dandi.add_asset(DANDISET, "a.nwb", b"x", embargoed=True)
        ok = session.get(listing_url(dandi), headers={"Authorization": "token other"})
        assert ok.status_code == 200


# ------------------------------------------------------------------------ faults


@pytest.mark.parametrize("kind", ["500", "503", "429"])
def test_status_faults(dandi, session, asset_id, kind):
    dandi.inject(kind, times=2, match="/assets/")
    url = f"{dandi.api_base}/assets/{asset_id}/"
    other = f"{dandi.api_base}/dandisets/{DANDISET}/versions/draft/"  # no match: no fault
    first = session.get(url)
    assert session.get(other).status_code == 404
    second = session.get(url)
    third = session.get(url)
    assert [first.status_code, second.status_code, third.status_code] == [int(kind)] * 2 + [200]
    assert "detail" in first.json()
    if kind == "429":
        assert first.headers["Retry-After"] == "0"
    assert dandi.count("api", "GET", match=asset_id) == 3


def test_status_fault_on_blob_server(dandi, session, asset_id):
    url = blob_url(dandi, session, asset_id)
    dandi.inject("503", match="/blobs/")
    assert session.get(url).status_code == 503
    assert session.get(url).content == PAYLOAD


@pytest.mark.parametrize(("kind", "cause"), [("reset", "reset"), ("truncate", "IncompleteRead")])
def test_broken_body_faults(dandi, session, asset_id, kind, cause):
    url = blob_url(dandi, session, asset_id)
    dandi.inject(kind)
    head = session.head(url)  # HEAD carries no body: it does not consume the fault
    assert head.status_code == 200
    received = bytearray()
    with session.get(url, stream=True) as response:
        assert response.headers["Content-Length"] == str(len(PAYLOAD))
        with pytest.raises(requests.exceptions.ChunkedEncodingError, match=cause):
            for piece in response.iter_content(512):
                received += piece
    assert 0 < len(received) < len(PAYLOAD)
    assert PAYLOAD.startswith(received)
    assert session.get(url).content == PAYLOAD  # one fault only


def test_broken_body_fault_applies_to_a_range_answer(dandi, session, asset_id):
    url = blob_url(dandi, session, asset_id)
    dandi.inject("truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(url, headers={"Range": "bytes=1000-"})
    resumed = session.get(url, headers={"Range": "bytes=1000-"})
    assert (resumed.status_code, resumed.content) == (206, PAYLOAD[1000:])


def test_api_faults_do_not_take_blob_only_kinds(dandi, session, asset_id):
    dandi.inject("no-range")  # matches every path, but only a blob GET takes it
    assert session.get(f"{dandi.api_base}/assets/{asset_id}/").status_code == 200
    url = blob_url(dandi, session, asset_id)
    ignored = session.get(url, headers={"Range": "bytes=0-9"})
    assert (ignored.status_code, ignored.content) == (200, PAYLOAD)
    assert "Content-Range" not in ignored.headers
    assert session.get(url, headers={"Range": "bytes=0-9"}).status_code == 206


def test_slow_fault_times_out_a_client(dandi, session, asset_id):
    url = f"{dandi.api_base}/assets/{asset_id}/"
    dandi.inject("slow", match=asset_id)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.get(url, timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert session.get(url, timeout=5).status_code == 200


def test_slow_fault_answers_after_two_seconds(dandi, session, asset_id):
    dandi.inject("slow")
    started = time.monotonic()
    assert session.get(f"{dandi.api_base}/assets/{asset_id}/", timeout=10).status_code == 200
    assert 1.9 < time.monotonic() - started < 4


def test_inject_validates(dandi):
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        dandi.inject("boom")
    with pytest.raises(ValueError, match="at least 1"):
        dandi.inject("500", times=0)


# ------------------------------------------------------------------------ records and lifecycle


def test_requests_are_recorded_in_order_with_headers(dandi, session, asset_id):
    dandi.inject("500")
    session.get(f"{dandi.api_base}/assets/{asset_id}/?x=1", headers={"X-Probe": "yes"})
    session.get(f"{dandi.api_base}/assets/{asset_id}/download/")
    session.post(f"{dandi.api_base}/assets/{asset_id}/", data=b"ignored")
    recorded = [(r.server, r.method, r.path) for r in dandi.requests]
    assert recorded[2][:2] == ("blob", "GET") and recorded[2][2].startswith("/blobs/")
    assert recorded[:2] + recorded[3:] == [
        ("api", "GET", f"/api/assets/{asset_id}/?x=1"),
        ("api", "GET", f"/api/assets/{asset_id}/download/"),
        ("api", "POST", f"/api/assets/{asset_id}/"),
    ]
    assert dandi.requests[0].headers["X-Probe"] == "yes"
    assert dandi.count() == 4
    assert dandi.count("blob") == 1
    assert dandi.count("api", "GET") == 2
    assert dandi.count(match="download") == 1
    assert dandi.count("api", "post") == 1


def test_exit_closes_kept_alive_connections_promptly(tmp_path):
    with requests.Session() as session:
        with DandiStandIn(tmp_path) as dandi:
            asset_id = dandi.add_asset(DANDISET, "a.nwb", b"x")
            assert session.get(f"{dandi.api_base}/assets/{asset_id}/").status_code == 200
            started = time.monotonic()
        assert time.monotonic() - started < 5  # a kept-alive handler left waiting blocks forever
        with pytest.raises(requests.exceptions.ConnectionError):
            session.get(f"{dandi.api_base}/assets/{asset_id}/", timeout=2)


def test_hostile_paths_are_served_as_given(dandi, session):
    asset_id = dandi.add_asset(DANDISET, "../../escape.nwb", b"x")
    assert session.get(listing_url(dandi)).json()["results"][0]["path"] == "../../escape.nwb"
    assert session.get(f"{dandi.api_base}/assets/{asset_id}/").json()["path"] == "../../escape.nwb"


def test_corrupt_fault_flips_the_first_byte_of_one_body(dandi, session, asset_id):
    url = blob_url(dandi, session, asset_id)
    dandi.inject("corrupt")
    assert session.head(url).status_code == 200  # no body: the fault stays queued
    corrupted = session.get(url).content
    assert len(corrupted) == len(PAYLOAD)
    assert corrupted[0] == PAYLOAD[0] ^ 0xFF and corrupted[1:] == PAYLOAD[1:]
    dandi.inject("corrupt")
    resumed = session.get(url, headers={"Range": "bytes=100-"})  # a range answer too
    assert resumed.status_code == 206
    assert resumed.content == bytes([PAYLOAD[100] ^ 0xFF]) + PAYLOAD[101:]
    assert session.get(url).content == PAYLOAD


@pytest.mark.parametrize(
    ("crafted", "request_path"),
    [
        ("../../victim", "/victim/"),  # where a client lands after removing dot segments
        ("/etc/spikelab", "/api/assets//etc/spikelab/"),
        ("not-a-uuid", "/api/assets/not-a-uuid/"),
    ],
)
def test_crafted_asset_ids_are_listed_and_answered(dandi, session, crafted, request_path):
    dandi.add_asset(DANDISET, "sub-01/evil.nwb", PAYLOAD, asset_id=crafted)
    dandi.add_asset(DANDISET, "sub-01/evil-blob.nwb", PAYLOAD, blob_id="../blob")
    evil_blob, evil = session.get(listing_url(dandi)).json()["results"]  # in path order
    assert (evil["asset_id"], evil_blob["blob"]) == (crafted, "../blob")
    origin = dandi.api_base.removesuffix("/api")
    metadata = session.get(f"{origin}{request_path}")
    assert metadata.status_code == 200 and metadata.json()["identifier"] == crafted
    download = session.get(f"{origin}{request_path}download/", allow_redirects=False)
    assert download.status_code == 302
    assert session.get(download.headers["Location"]).content == PAYLOAD


def test_zarr_assets_are_listed_without_a_blob(dandi, session):
    asset_id = dandi.add_zarr_asset(DANDISET, "sub-01/sub-01.nwb.zarr")
    (entry,) = session.get(listing_url(dandi)).json()["results"]
    assert entry["asset_id"] == asset_id and entry["blob"] is None
    assert len(entry["zarr"]) == 36 and entry["zarr"] != asset_id
    metadata = session.get(f"{dandi.api_base}/assets/{asset_id}/").json()
    assert metadata["path"] == "sub-01/sub-01.nwb.zarr"
    download = session.get(f"{dandi.api_base}/assets/{asset_id}/download/", allow_redirects=False)
    assert download.status_code == 400


def test_add_asset_validates(dandi, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.nwb"):
        dandi.add_asset(DANDISET, "a.nwb", tmp_path / "missing.nwb")
    with pytest.raises(TypeError, match="bytes or a Path"):
        dandi.add_asset(DANDISET, "a.nwb", "text")


# ------------------------------------------------------------------------ dandi-etag


def multipart_etag(parts):
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def test_etag_of_small_and_empty_content(tmp_path):
    assert dandi_etag(b"") == f"{hashlib.md5(b'').hexdigest()}-0"
    assert dandi_etag(PAYLOAD) == multipart_etag([PAYLOAD])
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert dandi_etag(path) == dandi_etag(str(path)) == multipart_etag([PAYLOAD])


def test_etag_of_several_parts(tmp_path, monkeypatch):
    monkeypatch.setattr(dandi_server, "ETAG_PART_SIZE", 1000)
    monkeypatch.setattr(dandi_server, "CHUNK_SIZE", 300)  # chunks straddle part boundaries
    data = PAYLOAD[:3500]
    expected = multipart_etag([data[0:1000], data[1000:2000], data[2000:3000], data[3000:]])
    assert dandi_etag(data) == expected
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert dandi_etag(path) == expected
    assert dandi_etag(data[:3000]) == multipart_etag(
        [data[:1000], data[1000:2000], data[2000:3000]]
    )


def test_etag_part_size_grows_at_the_part_limit(monkeypatch):
    monkeypatch.setattr(dandi_server, "ETAG_PART_SIZE", 10)
    monkeypatch.setattr(dandi_server, "ETAG_MAX_PARTS", 4)
    data = PAYLOAD[:35]  # 4 parts of 10 would hit the limit: 4 parts of ceil(35/4) = 9
    assert dandi_etag(data) == multipart_etag([data[0:9], data[9:18], data[18:27], data[27:]])
    below = PAYLOAD[:30]  # 3 parts of 10 stay below the limit
    assert dandi_etag(below) == multipart_etag([below[0:10], below[10:20], below[20:]])
    exact = PAYLOAD[:40]  # exactly 4 parts: part size ceil(40/4) = 10 anyway
    assert dandi_etag(exact) == multipart_etag([exact[i : i + 10] for i in range(0, 40, 10)])


def test_metadata_etag_follows_the_part_size(dandi, session, asset_id, monkeypatch):
    monkeypatch.setattr(dandi_server, "ETAG_PART_SIZE", 4096)
    digest = session.get(f"{dandi.api_base}/assets/{asset_id}/").json()["digest"]
    parts = [PAYLOAD[0:4096], PAYLOAD[4096:8192], PAYLOAD[8192:]]
    assert digest["dandi:dandi-etag"] == multipart_etag(parts)
