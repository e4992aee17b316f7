"""spikelab.http, the one HTTP layer: retry policy, redaction, verified resumable downloads."""

import hashlib
from contextlib import contextmanager
from pathlib import Path

import pytest
import urllib3

from spikelab import http
from spikelab.digests import Check, EtagDigest
from spikelab.download import download_verified
from spikelab.exceptions import DigestMismatchError, RemoteError
from spikelab.loaders.dandi import _client as _dandi_client
from spikelab.loaders.nwb import load_remote_nwb
from spikelab.testing import DandiStandIn

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


@pytest.fixture
def slept(monkeypatch):
    """Every wait the HTTP layer asks for, instead of sleeping."""
    waits = []
    monkeypatch.setattr(http.time, "sleep", waits.append)
    return waits


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with DandiStandIn(tmp_path_factory.mktemp("http-archive")) as server:
        server.asset_id = server.add_asset("000321", "sub-1/payload.bin", PAYLOAD)
        yield server


def test_one_redaction_for_every_client(archive):
    url = "https://bucket.s3.amazonaws.com/blobs/ab/cd?X-Amz-Signature=secret&X-Amz-Credential=k"
    assert http.redact(url) == "https://bucket.s3.amazonaws.com/blobs/ab/cd"
    signed = "?X-Amz-Signature=secret&X-Amz-Credential=key"
    missing = f"/assets/{'0' * 8}-0000-0000-0000-{'0' * 12}/"
    with _dandi_client.DandiClient(archive.api_base) as client, pytest.raises(RemoteError) as api:
        client.request("GET", f"{archive.api_base}{missing}{signed}")
    with pytest.raises(RemoteError) as blob:  # the streamed reader's own requests
        load_remote_nwb(f"{archive.blob_base}/no-such-blob{signed}")
    for raised in (api, blob):
        assert "404" in str(raised.value) and "secret" not in str(raised.value)
        assert "X-Amz" not in str(raised.value)


def test_backoff_waits_before_the_first_retry_and_doubles(monkeypatch):
    monkeypatch.setattr(http.random, "uniform", lambda low, high: 1.0)  # jitter at its middle
    retry = http.RetryPolicy(attempts=4, backoff_seconds=0.5).urllib3_retry()
    delays = []
    for _ in range(3):
        retry = retry.increment("GET", "/x", error=urllib3.exceptions.ProtocolError("reset"))
        delays.append(retry.get_backoff_time())
    assert delays == [0.5, 1.0, 2.0]
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        retry.increment("GET", "/x", error=urllib3.exceptions.ProtocolError("reset"))


def test_jitter_stays_within_half_and_one_and_a_half():
    retry = http.RetryPolicy(attempts=3, backoff_seconds=1.0).urllib3_retry()
    retry = retry.increment("GET", "/x", error=urllib3.exceptions.ProtocolError("reset"))
    delays = {retry.get_backoff_time() for _ in range(200)}
    assert min(delays) >= 0.5 and max(delays) <= 1.5 and len(delays) > 100


@pytest.mark.parametrize(("header", "wait"), [("0", 0.0), ("3", 3.0), ("7200", 60.0)])
def test_retry_after_is_honoured_and_capped(slept, header, wait):
    retry = http.RetryPolicy().urllib3_retry()
    answer = urllib3.HTTPResponse(body=b"", headers={"Retry-After": header}, status=429)
    retry.sleep(answer)
    assert slept == [wait]


def test_a_session_retries_transient_statuses(archive, slept):
    url = f"{archive.api_base}/assets/{archive.asset_id}/"
    archive.inject("503", times=1, match=archive.asset_id)
    archive.inject("429", times=1, match=archive.asset_id)  # with Retry-After: 0
    before = archive.count("api", match=archive.asset_id)
    with http.new_session(http.RetryPolicy(attempts=3, backoff_seconds=0.25)) as session:
        response = session.get(url, timeout=5)
    assert response.status_code == 200 and response.json()["contentSize"] == len(PAYLOAD)
    assert http.attempts_of(response) == 3
    assert archive.count("api", match=archive.asset_id) - before == 3
    assert len(slept) == 2 and 0.125 <= slept[0] <= 0.375 and slept[1] == 0.0
    assert response.request.headers["User-Agent"] == http.USER_AGENT


def test_the_last_status_comes_back_with_its_attempts(archive, slept):
    archive.inject("500", times=3, match=archive.asset_id)
    with http.new_session(http.RetryPolicy(attempts=3, backoff_seconds=0.0)) as session:
        response = session.get(f"{archive.api_base}/assets/{archive.asset_id}/", timeout=5)
    assert (response.status_code, http.attempts_of(response)) == (500, 3)


class ListSource:
    """A download source that is not HTTP: answers scripted per call, offsets recorded."""

    transient = http.TRANSIENT_ERRORS

    def __init__(self, data, script):
        self.name = "scripted.bin"
        self.data = data
        self.script = list(script)  # per call: "ok", "cut" (half, then reset), "ignore"
        self.offsets = []

    @contextmanager
    def open(self, offset):
        self.offsets.append(offset)
        how = self.script.pop(0) if self.script else "ok"
        start = 0 if how == "ignore" else offset
        body = self.data[start:]

        def blocks():
            if how == "cut":
                yield body[: len(body) // 2]
                raise ConnectionResetError(104, "reset by peer")
            yield from (body[i : i + 1000] for i in range(0, len(body), 1000))

        yield start, blocks()


def sha256_check(data):
    return Check("sha256", hashlib.sha256(data).hexdigest(), hashlib.sha256)


def test_a_cut_body_resumes_where_it_broke(tmp_path, slept):
    source = ListSource(PAYLOAD, ["cut", "ok"])
    destination = tmp_path / "out" / "file.bin"
    found = download_verified(
        source, destination, size=len(PAYLOAD), checks=[sha256_check(PAYLOAD)]
    )
    assert source.offsets == [0, len(PAYLOAD) // 2]
    assert destination.read_bytes() == PAYLOAD
    assert found == {"sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    assert sorted(p.name for p in destination.parent.iterdir()) == ["file.bin"]


def test_a_source_that_ignores_the_offset_starts_over(tmp_path, slept):
    source = ListSource(PAYLOAD, ["cut", "ignore"])
    destination = tmp_path / "file.bin"
    download_verified(source, destination, size=len(PAYLOAD), checks=[sha256_check(PAYLOAD)])
    assert destination.read_bytes() == PAYLOAD  # not the first half twice


def test_wrong_bytes_are_deleted_and_fetched_once_more(tmp_path):
    destination = tmp_path / "file.bin"
    destination.write_bytes(b"an older copy")
    source = ListSource(PAYLOAD, [])
    check = Check("sha256", "0" * 64, hashlib.sha256)
    with pytest.raises(
        DigestMismatchError,
        match=r"scripted.bin is corrupt: sha256 is [0-9a-f]{64} but the archive publishes 0{64}"
        r", also on a fresh second download; nothing was kept!$",
    ):
        download_verified(source, destination, size=len(PAYLOAD), checks=[check], mismatch_hint="!")
    assert source.offsets == [0, 0]
    assert list(tmp_path.iterdir()) == []


def test_a_partial_is_resumed_only_for_the_same_digest(tmp_path, slept):
    destination = tmp_path / "file.bin"
    always_cut = ListSource(PAYLOAD, ["cut"] * 3)
    with pytest.raises(RemoteError, match=r"scripted.bin kept failing .* after 3 attempts"):
        download_verified(
            always_cut,
            destination,
            size=len(PAYLOAD),
            checks=[sha256_check(PAYLOAD)],
            policy=http.RetryPolicy(attempts=3),
        )
    kept = Path(f"{destination}.partial").stat().st_size
    assert 0 < kept < len(PAYLOAD)
    other = PAYLOAD[::-1]  # the archive now publishes other bytes at the same path
    source = ListSource(other, [])
    download_verified(source, destination, size=len(other), checks=[sha256_check(other)])
    assert source.offsets == [0] and destination.read_bytes() == other


def test_etag_arithmetic_is_the_s3_multipart_etag():
    parts = [PAYLOAD[:4096], PAYLOAD[4096:8192], PAYLOAD[8192:]]
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    digest = EtagDigest(len(PAYLOAD), part_size=4096)
    for i in range(0, len(PAYLOAD), 777):  # blocks that straddle part boundaries
        digest.update(PAYLOAD[i : i + 777])
    assert digest.hexdigest() == f"{hashlib.md5(joined).hexdigest()}-3"
