"""Whole files on S3 through spikelab.io.storage, counted at moto's end of the socket."""

import json
import re

import pytest
from publications import pending

from spikelab.io import storage
from spikelab.io.delta_lake import LakeWriter, Publication, publish
from spikelab.io.delta_read import connect
from spikelab.io.delta_upkeep import remove_unpublished

BLANKS = re.compile(r"\s*")


@pytest.fixture
def recorded(aws_env, empty_moto, tmp_path, monkeypatch):
    """moto's request recorder, writing to a file of this test's own."""
    from moto.moto_api import recorder

    monkeypatch.setattr(recorder, "_location", str(tmp_path / "requests.jsonl"))
    recorder.reset_recording()
    yield recorder
    recorder.stop_recording()


def recorded_requests(recorder) -> list[dict]:
    """The recorded requests, in order.

    moto writes an entry and its newline in two writes, so the entries of two requests
    served at once (the units and sessions commits) can share a line: each JSON object is
    decoded in turn rather than line by line.
    """
    text, decoder = recorder.download_recording(), json.JSONDecoder()
    found, at = [], BLANKS.match(text).end()
    while at < len(text):
        entry, end = decoder.raw_decode(text, at)
        found.append(entry)
        at = BLANKS.match(text, end).end()
    return found


def test_a_small_object_is_one_put_through_the_buckets_one_filesystem(recorded, empty_moto):
    empty_moto.create_bucket(Bucket="lake")
    storage.put_bytes("s3://lake/runs/first.json", b"{}")  # the bucket's filesystem is made
    recorded.start_recording()
    storage.put_bytes("s3://lake/runs/a.json", b"[1]")
    storage.put_bytes("s3://lake/manifests/b.json", b"[2, 3]")
    recorded.stop_recording()
    requests = recorded_requests(recorded)
    assert [(r["method"], r["url"].split("/", 3)[-1]) for r in requests] == [
        ("PUT", "lake/runs/a.json"),
        ("PUT", "lake/manifests/b.json"),
    ]  # no region lookup, no multipart upload
    assert storage.get_bytes("s3://lake/runs/a.json") == b"[1]"
    assert storage.get_bytes("s3://lake/manifests/b.json") == b"[2, 3]"


def test_new_aws_credentials_get_a_filesystem_of_their_own(recorded, empty_moto, monkeypatch):
    empty_moto.create_bucket(Bucket="lake")
    storage.put_bytes("s3://lake/a.json", b"1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated")
    recorded.start_recording()
    storage.put_bytes("s3://lake/b.json", b"2")
    recorded.stop_recording()
    (request,) = recorded_requests(recorded)
    assert "Credential=rotated/" in request["headers"]["Authorization"]


def _pending_publication(asset_id):
    entry = pending(asset_id)
    key = tuple(entry["target"].values())
    return Publication(key, entry["units"], entry["manifest"])


def _table_requests(requests, table):
    """(method, what) of the requests that touch one table, in order."""
    found = []
    for request in requests:
        url = request["url"].split("/", 3)[-1].replace("%2F", "/")
        if f"tables/{table}/" not in url:
            continue
        if "list-type=2" in url:
            found.append(("LIST", "_delta_log"))
        else:
            name = url.split(f"tables/{table}/", 1)[1].split("?")[0]
            found.append((request["method"], "data" if name.startswith("part-") else name))
    return found


def test_a_writers_second_batch_refreshes_only_the_assets_table(recorded, empty_moto):
    """Appends go on the writer's own snapshot; the assets commit reads its table once."""
    empty_moto.create_bucket(Bucket="lake")
    writer = LakeWriter("s3://lake/x")
    writer.publish([_pending_publication("a1")])  # makes the tables
    writer.publish([_pending_publication("a2")])  # opens them
    recorded.start_recording()
    writer.publish([_pending_publication("a3")])
    recorded.stop_recording()
    requests = recorded_requests(recorded)
    for table in ("units", "sessions"):
        assert _table_requests(requests, table)[:3] == [
            ("PUT", "data"),  # no refresh before the append
            ("LIST", "_delta_log"),
            ("PUT", "_delta_log/00000000000000000002.json"),
        ]
    assets = _table_requests(requests, "assets")
    assert assets[:2] == [("LIST", "_delta_log"), ("GET", "_delta_log/_last_checkpoint")]
    assert assets.count(("GET", "_delta_log/_last_checkpoint")) == 1  # one refresh, not two
    assert ("PUT", "_delta_log/00000000000000000003.json") in assets  # made empty, a1, a2


def test_unpublished_rows_are_looked_for_without_reading_young_files(recorded, empty_moto):
    """Every publication is younger than the cutoff: no data file is read, nor the assets."""
    empty_moto.create_bucket(Bucket="lake")
    writer = LakeWriter("s3://lake/x")
    writer.publish([_pending_publication("a1")])
    writer.publish([_pending_publication("a2")])
    publish("s3://lake/x", [_pending_publication("a2")])  # a1's and a2's first are named
    recorded.start_recording()
    assert remove_unpublished("s3://lake/x") == 0
    recorded.stop_recording()
    requests = recorded_requests(recorded)
    urls = [request["url"].replace("%2F", "/") for request in requests]
    assert [url for url in urls if ".parquet" in url or "tables/assets" in url] == []
    assert remove_unpublished("s3://lake/x", older_than_seconds=0) == 0  # all named
    units = connect("s3://lake/x").execute("SELECT count(*) FROM units").fetchone()
    assert units == (4,)  # a1's 2 units, a2's 2 of the last publication
