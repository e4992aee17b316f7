"""The one guess of a remote HDF5 read: the stretch after a miss in the middle, up to the tail."""

import time

import numpy as np
import pytest
from nwb_fixtures import raw_traces_nwbfile, write

from spikelab.http import RetryPolicy
from spikelab.loaders import load_spikedata_from_dandi
from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.nwb import _remote_hdf5
from spikelab.loaders.nwb._ranges import RangeClient
from spikelab.loaders.nwb._remote_hdf5 import CHUNK_BYTES, _ChunkCache, _DiskChunks, _Fetcher
from spikelab.testing import DandiStandIn

CHUNKS = 40
LATENCY_SECONDS = 0.5  # before every answer in the round-trip test
NOISE = np.random.default_rng(7).integers(0, 256, CHUNKS * CHUNK_BYTES, dtype=np.uint8).tobytes()


def late_units(path):
    """An NWB file whose 3 MB Units table is written after a 13 MB ElectricalSeries."""
    rng = np.random.default_rng(1)
    data = rng.integers(-500, 500, size=(100_000, 64), dtype=np.int16)
    nwbfile = raw_traces_nwbfile(data, 30000.0, "late-units", spacing_um=10.0)
    for unit in range(40):
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0, 3.0, 10_000)), id=unit)
    return write(nwbfile, path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("guess-archive")
    with DandiStandIn(root / "archive") as server:
        server.noise = server.add_asset("000777", "sub-1/noise.bin", NOISE)
        path = late_units(root / "late.nwb")
        server.late = server.add_asset("000777", "sub-2/late.nwb", path)
        server.late_size = path.stat().st_size
        yield server


def blob_spans(archive, start):
    """``(first, last)`` byte of each blob request since ``start``, in the order sent."""
    return [
        tuple(int(x) for x in r.headers["Range"].removeprefix("bytes=").split("-"))
        for r in archive.requests[start:]
        if r.server == "blob"
    ]


def chunks(spans):
    return sorted(
        i for first, last in spans for i in range(first // CHUNK_BYTES, last // CHUNK_BYTES + 1)
    )


def noise_fetcher(archive, disk=None):
    """A fetcher of the noise blob whose first chunk and last four are cached."""
    with DandiClient(archive.api_base) as client:
        url = client.blob_url(archive.noise)
    client = RangeClient(url, timeout_seconds=5.0, policy=RetryPolicy(2, 0.01))
    fetcher = _Fetcher(client.get, _ChunkCache(len(NOISE), disk(url) if disk else None))
    fetcher.fetch([(0, CHUNK_BYTES), ((CHUNKS - 4) * CHUNK_BYTES, 4 * CHUNK_BYTES)])
    return fetcher


@pytest.fixture
def fetcher(archive):
    fetcher = noise_fetcher(archive)
    yield fetcher
    fetcher.close()


def cached_bytes(fetcher, index):
    return bytes(fetcher.cache.get(index))


def test_a_miss_fetches_the_stretch_up_to_the_tail_once(archive, fetcher, monkeypatch):
    monkeypatch.setattr(_remote_hdf5, "GUESS_BYTES", 20 * CHUNK_BYTES)
    start = len(archive.requests)
    fetcher.fetch([(20 * CHUNK_BYTES + 5, 10)], guess=True)  # chunk 20; 21-35 guessed
    fetcher.fetch([(30 * CHUNK_BYTES, 1)], guess=True)  # on its way: waited for, not asked
    guessed = blob_spans(archive, start)
    assert chunks(guessed) == list(range(20, CHUNKS - 4)), guessed
    assert (20 * CHUNK_BYTES, 21 * CHUNK_BYTES - 1) in guessed  # the miss: a request of its own
    fetcher.fetch([(5 * CHUNK_BYTES, 1)], guess=True)  # a second miss: no second guess
    assert chunks(blob_spans(archive, start)[len(guessed) :]) == [5]
    for index in (5, 20, 30, 35):
        assert (
            cached_bytes(fetcher, index) == NOISE[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
        )


def test_a_stretch_longer_than_the_guess_is_left_alone(archive, fetcher, monkeypatch):
    monkeypatch.setattr(_remote_hdf5, "GUESS_BYTES", 10 * CHUNK_BYTES)
    start = len(archive.requests)
    fetcher.fetch([(20 * CHUNK_BYTES, 1)], guess=True)  # 15 chunks to the tail: too many
    assert chunks(blob_spans(archive, start)) == [20]
    fetcher.fetch([(30 * CHUNK_BYTES, 1)], guess=True)  # 5 to the tail: the guess is made
    fetcher.close()  # the guess is fetched on the pool: wait for it
    assert chunks(blob_spans(archive, start)) == [20, *range(30, CHUNKS - 4)]


def test_a_prefetch_never_guesses(archive, fetcher):
    start = len(archive.requests)
    fetcher.fetch([(20 * CHUNK_BYTES, 1)])
    assert chunks(blob_spans(archive, start)) == [20]


def test_the_guess_leaves_out_what_the_disk_cache_holds(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(_remote_hdf5, "GUESS_BYTES", 20 * CHUNK_BYTES)

    def disk(url):
        kept = _DiskChunks(tmp_path, url)
        for index in (25, 26):
            kept.put(index, NOISE[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES])
        return kept

    fetcher = noise_fetcher(archive, disk)
    start = len(archive.requests)
    try:
        fetcher.fetch([(20 * CHUNK_BYTES, 1)], guess=True)
        fetcher.fetch([(35 * CHUNK_BYTES, 1)])  # waits for the guess
    finally:
        fetcher.close()
    assert chunks(blob_spans(archive, start)) == [*range(20, 25), *range(27, CHUNKS - 4)]


def late_load(archive):
    """Stream the late Units with every answer 0.5 s late: (SpikeData, blob spans, seconds)."""
    start = len(archive.requests)
    archive.latency_seconds = LATENCY_SECONDS
    began = time.monotonic()
    try:
        sd = load_spikedata_from_dandi(
            archive.late, api_base=archive.api_base, stream=True, stream_only=True
        )
    finally:
        archive.latency_seconds = 0.0
    return sd, blob_spans(archive, start), time.monotonic() - began


def test_units_written_after_the_raw_data_come_with_the_guess(archive, monkeypatch):
    sd, spans, seconds = late_load(archive)
    assert sd.N == 40 and sum(t.size for t in sd.train) == 400_000
    edges, after = spans[:2], spans[2:]
    tail_start = max(first for first, _ in edges)
    miss = min(first for first, _ in after)
    # the miss and the guess, no chunk twice, nothing after them (no prefetch round)
    assert chunks(after) == list(range(miss // CHUNK_BYTES, tail_start // CHUNK_BYTES))
    assert len(after) <= 1 + -(-(tail_start - miss) // _remote_hdf5.PART_BYTES)
    assert sd.metadata["bytes_read"] < 0.5 * archive.late_size  # the raw data never comes
    # three round trips (the record, the edges, the miss with the guess), not four
    assert 3 * LATENCY_SECONDS <= seconds < 4 * LATENCY_SECONDS

    monkeypatch.setattr(_remote_hdf5, "GUESS_BYTES", 0)  # without it: the data a round later
    again, without, slower = late_load(archive)
    assert [t.tolist() for t in again.train] == [t.tolist() for t in sd.train]
    assert slower >= 4 * LATENCY_SECONDS
    assert chunks(without) == chunks(spans)  # the same bytes, one round trip more
