"""Whole files on S3 through spikelab.io.storage, counted at moto's end of the socket."""

import json

import pytest

from spikelab.io import storage


@pytest.fixture
def recorded(aws_env, empty_moto, tmp_path, monkeypatch):
    """moto's request recorder, writing to a file of this test's own."""
    from moto.moto_api import recorder

    monkeypatch.setattr(recorder, "_location", str(tmp_path / "requests.jsonl"))
    recorder.reset_recording()
    yield recorder
    recorder.stop_recording()


def test_a_small_object_is_one_put_through_the_buckets_one_filesystem(recorded, empty_moto):
    empty_moto.create_bucket(Bucket="lake")
    storage.put_bytes("s3://lake/runs/first.json", b"{}")  # the bucket's filesystem is made
    recorded.start_recording()
    storage.put_bytes("s3://lake/runs/a.json", b"[1]")
    storage.put_bytes("s3://lake/manifests/b.json", b"[2, 3]")
    recorded.stop_recording()
    requests = [json.loads(line) for line in recorded.download_recording().splitlines()]
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
    (request,) = [json.loads(line) for line in recorded.download_recording().splitlines()]
    assert "Credential=rotated/" in request["headers"]["Authorization"]
