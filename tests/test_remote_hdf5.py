"""Remote HDF5 reads: every request goes through spikelab's session, timeouts and retries."""

import time

import h5py
import numpy as np
import pytest

from spikelab.exceptions import StreamingError
from spikelab.http import RetryPolicy
from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.nwb import _ranges, _remote_hdf5
from spikelab.loaders.nwb._remote_hdf5 import CHUNK_BYTES, open_remote_hdf5
from spikelab.testing import DandiStandIn

MIDDLE = np.arange(1000, dtype=np.float64) * 0.5  # stored 3 MB into a 6 MB file


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A plain HDF5 file whose ``middle`` dataset lies far from both edges, and its URL."""
    root = tmp_path_factory.mktemp("remote-hdf5")
    path = root / "middle.h5"
    with h5py.File(path, "w") as handle:
        handle["before"] = np.zeros(3_000_000 // 8)
        handle.create_group("group")["middle"] = MIDDLE
        handle["after"] = np.ones(3_000_000 // 8)
    with DandiStandIn(root / "archive") as archive:
        asset = archive.add_asset("000123", "sub-1/middle.h5", path)
        with DandiClient(archive.api_base) as client:
            archive.url = client.blob_url(asset)
        archive.size = path.stat().st_size
        yield archive


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, served):
    monkeypatch.setattr(_remote_hdf5, "RETRY_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(_remote_hdf5, "GUESS_BYTES", 0)  # these count the requests of a miss
    yield
    served.clear_faults()


def _ranges_policy():
    """The retry policy of remote HDF5 reads (the session the reads share is kept by it)."""
    return RetryPolicy(_remote_hdf5.RANGE_ATTEMPTS, _remote_hdf5.RETRY_BACKOFF_SECONDS)


def blob_ranges(archive, start):
    return [r.headers.get("Range") for r in archive.requests[start:] if r.server == "blob"]


def spans(ranges):
    """``(first, last)`` byte of each ``bytes=first-last`` header."""
    return [tuple(int(x) for x in r.removeprefix("bytes=").split("-")) for r in ranges]


def test_a_read_outside_the_edges_is_one_request_with_a_timeout(served, monkeypatch):
    timeouts = []
    session = _ranges.shared_session(_ranges_policy())
    real_get = session.get

    def spy(*args, **kwargs):
        timeouts.append(kwargs["timeout"])
        return real_get(*args, **kwargs)

    monkeypatch.setattr(session, "get", spy)
    start = len(served.requests)
    with open_remote_hdf5(served.url, size_bytes=served.size, timeout_seconds=7.5) as remote:
        edges = len(blob_ranges(served, start))
        values = remote.handle["group/middle"][()]
        missed = blob_ranges(served, start)[edges:]
        read = remote.bytes_read
    assert values.tolist() == MIDDLE.tolist()
    assert edges == 2 and len(missed) == 1, missed  # the miss: one chunk-aligned request
    [(first, last)] = spans(missed)
    assert first % CHUNK_BYTES == 0 and (last + 1 - first) % CHUNK_BYTES == 0
    assert timeouts == [7.5] * 3  # every request, the miss too, went through spikelab
    assert read == sum(last + 1 - first for first, last in spans(blob_ranges(served, start)))


def test_a_stalled_read_times_out_and_is_asked_again_by_the_session(served):
    with open_remote_hdf5(served.url, size_bytes=served.size, timeout_seconds=0.3) as remote:
        start = len(served.requests)
        served.inject("slow", match="/blobs/")  # answers after 2 s: past the timeout
        began = time.monotonic()
        values = remote.handle["group/middle"][()]
        took = time.monotonic() - began
    assert values.tolist() == MIDDLE.tolist()
    assert len(blob_ranges(served, start)) == 2  # the stalled try and the retry
    assert took < 1.5


def test_stalled_answers_are_tried_by_one_layer_only(served):
    start = len(served.requests)
    served.inject("slow", times=50, match="/blobs/")
    with pytest.raises(StreamingError, match=r"bytes 0-262143 failed 5 times .*timed out"):
        with open_remote_hdf5(served.url, timeout_seconds=0.05):  # size unknown: head first
            pass
    assert len(blob_ranges(served, start)) == _remote_hdf5.RANGE_ATTEMPTS  # not 5 x 5


def test_a_broken_body_is_asked_for_again(served):
    start = len(served.requests)
    served.inject("truncate", times=1, match="/blobs/")
    with open_remote_hdf5(served.url) as remote:
        assert remote.handle["group/middle"][()].tolist() == MIDDLE.tolist()
    ranges = blob_ranges(served, start)
    assert ranges[0] == ranges[1] == f"bytes=0-{CHUNK_BYTES - 1}"  # the torn head, again


def test_nothing_reaches_the_disk_without_a_cache_dir(served, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with open_remote_hdf5(served.url, size_bytes=served.size) as remote:
        remote.handle["group/middle"][()]
    assert list(tmp_path.iterdir()) == []


def test_the_cache_dir_serves_the_chunks_of_a_second_open(served, tmp_path):
    start = len(served.requests)
    with open_remote_hdf5(served.url, size_bytes=served.size, cache_dir=tmp_path) as remote:
        remote.handle["group/middle"][()]
    fetched = {
        index
        for first, last in spans(blob_ranges(served, start))
        for index in range(first // CHUNK_BYTES, last // CHUNK_BYTES + 1)
    }
    kept = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(kept) == len(fetched) and not [p for p in kept if p.name.endswith(".partial")]
    start = len(served.requests)
    with open_remote_hdf5(served.url, size_bytes=served.size, cache_dir=tmp_path) as remote:
        assert remote.handle["group/middle"][()].tolist() == MIDDLE.tolist()
    assert len(blob_ranges(served, start)) == 2  # the edges (the Range check), not the miss
