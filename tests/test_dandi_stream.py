"""Units-only remote reads: NWB over HTTP range requests, against the stand-in archive."""

import time
import warnings
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from nwb_fixtures import raw_traces_nwbfile, write
from test_dandi import sorted_units

from spikelab.exceptions import RangeNotSupportedError, StreamingError
from spikelab.io import export_spikedata_to_nwb
from spikelab.loaders import (
    load_spikedata_from_dandi,
    load_spikedata_from_nwb,
)
from spikelab.loaders.dandi import _client as _dandi_client
from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.nwb import _remote_hdf5
from spikelab.loaders.nwb._remote_hdf5 import stored_ranges
from spikelab.testing import DandiStandIn

# How the bytes came, not what they hold: these may differ between the two paths.
TRANSFER_KEYS = {
    "transfer",
    "bytes_read",
    "digest_verified",
    "source_file",
    "downloaded_path",
    "reader",
}


def big_raw_with_units(path):
    """An NWB file with a ~19 MB ElectricalSeries and 40 sorted units."""
    rng = np.random.default_rng(0)
    data = rng.integers(-500, 500, size=(150_000, 64), dtype=np.int16)
    nwbfile = raw_traces_nwbfile(data, 30000.0, "big-1", spacing_um=10.0)
    nwbfile.add_unit_column(name="quality", description="label")
    for unit in range(40):
        times = np.sort(rng.uniform(0, 5.0, 200))
        nwbfile.add_unit(spike_times=times, electrodes=[unit], quality="good", id=unit)
    return write(nwbfile, path)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(_dandi_client, "DEFAULT_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(_remote_hdf5, "RETRY_BACKOFF_SECONDS", 0.01)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream-archive")
    with DandiStandIn(root) as server:
        server.ids = {}
        server.paths = {}
        for name, offset in [("sorted-a.nwb", 0.0), ("sorted-b.nwb", 10.0)]:
            path = export_spikedata_to_nwb(sorted_units(offset), root / name)
            server.ids[name] = server.add_asset("000555", f"sub-1/{name}", path)
            server.paths[name] = path
        big = big_raw_with_units(root / "big.nwb")
        server.ids["big"] = server.add_asset("000555", "sub-2/big.nwb", big)
        server.paths["big"] = big
        server.ids["garbage"] = server.add_asset("000555", "sub-3/garbage.nwb", b"\x00" * 50_000)
        server.ids["secret"] = server.add_asset(
            "000556", "sub-1/secret.nwb", root / "sorted-a.nwb", embargoed=True
        )
        yield server


def same_content(streamed, downloaded):
    assert [t.tolist() for t in streamed.train] == [t.tolist() for t in downloaded.train]
    assert streamed.neuron_attributes == downloaded.neuron_attributes
    assert (streamed.length, streamed.start_time) == (downloaded.length, downloaded.start_time)
    strip = lambda m: {k: v for k, v in m.items() if k not in TRANSFER_KEYS}  # noqa: E731
    assert strip(streamed.metadata) == strip(downloaded.metadata)


@pytest.mark.parametrize("name", ["sorted-a.nwb", "sorted-b.nwb", "big"])
def test_streamed_equals_downloaded(archive, tmp_path, name):
    asset = archive.ids[name]
    kwargs = {"dandiset_id": "000555", "api_base": archive.api_base}
    downloaded = load_spikedata_from_dandi(asset, download_dir=tmp_path, **kwargs)
    served_before = archive.blob_bytes_served
    streamed = load_spikedata_from_dandi(asset, stream=True, stream_only=True, **kwargs)
    deadline = time.monotonic() + 2  # the server counts a body after sending its last byte
    while archive.blob_bytes_served - served_before < streamed.metadata["bytes_read"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    served = archive.blob_bytes_served - served_before
    same_content(streamed, downloaded)
    size = archive.paths[name].stat().st_size
    assert streamed.metadata["transfer"] == "streamed"
    assert streamed.metadata["digest_verified"] is False
    assert downloaded.metadata["transfer"] == "downloaded"
    assert downloaded.metadata["digest_verified"] is True
    assert downloaded.metadata["bytes_read"] == size
    assert streamed.metadata["bytes_read"] == served  # what the client counted, the server sent
    if name == "big":
        assert size > 15_000_000
        assert served < 0.05 * size, f"{served} of {size} bytes"


def test_streaming_takes_few_round_trips(archive):
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(
        archive.ids["big"], api_base=archive.api_base, stream=True, stream_only=True
    )
    seen = archive.requests[start:]
    assert sd.N == 40 and sum(t.size for t in sd.train) == 8000
    # The asset record gives the blob URL and size: no download redirect is followed.
    assert [r.path.rsplit("/", 2)[-2] for r in seen if r.server == "api"] == [archive.ids["big"]]
    blob = [r.headers["Range"] for r in seen if r.server == "blob"]
    size = archive.paths["big"].stat().st_size
    tail = f"bytes={(size - 524288) // 262144 * 262144}-{size - 1}"
    assert sorted(blob[:2]) == sorted(["bytes=0-262143", tail])  # sent at once
    assert len(blob) <= 5, blob  # 40 units: never a request per unit


def test_nwb_loader_reads_a_url_of_unknown_size(archive):
    with DandiClient(archive.api_base) as client:
        blob = client.blob_url(archive.ids["big"])
    sd = load_spikedata_from_nwb(blob)
    assert sd.N == 40 and sd.metadata["transfer"] == "streamed"
    assert sd.metadata["bytes_read"] < 0.05 * archive.paths["big"].stat().st_size


def test_disk_cache_serves_a_second_streamed_read(archive, tmp_path):
    with DandiClient(archive.api_base) as client:
        blob = client.blob_url(archive.ids["big"])
    first = load_spikedata_from_nwb(blob, cache_dir=tmp_path)
    start = len(archive.requests)
    again = load_spikedata_from_nwb(blob, cache_dir=tmp_path)
    assert [t.tolist() for t in again.train] == [t.tolist() for t in first.train]
    ranges = [r.headers["Range"] for r in archive.requests[start:] if r.server == "blob"]
    assert len(ranges) == 2 and ranges[0] == "bytes=0-262143", ranges  # only the two ends


def test_stored_ranges_without_chunk_iter(archive):
    """HDF5 older than 1.12.3 has no chunk iterator: the ranges come chunk by chunk."""

    class OldDatasetId:
        def __init__(self, dataset_id):
            self._id = dataset_id

        def get_num_chunks(self):
            return self._id.get_num_chunks()

        def get_chunk_info(self, index):
            return self._id.get_chunk_info(index)

    with h5py.File(archive.paths["big"], "r") as handle:
        for name in ("spike_times", "spike_times_index", "id"):
            dataset = handle["units"][name]
            old = SimpleNamespace(chunks=dataset.chunks, id=OldDatasetId(dataset.id))
            ranges = stored_ranges(dataset)
            assert ranges and stored_ranges(old) == ranges
            assert sum(length for _, length in ranges) == dataset.id.get_storage_size()


@pytest.mark.parametrize("fault", ["503", "429", "reset", "truncate"])
def test_transient_blob_failures_are_retried(archive, fault):
    def streamed_load():
        before = archive.count("blob")
        sd = load_spikedata_from_dandi(
            archive.ids["big"], api_base=archive.api_base, stream=True, stream_only=True
        )
        return sd, archive.count("blob") - before

    clean, requests_clean = streamed_load()
    archive.inject(fault, times=2, match="/blobs/")
    sd, requests_faulty = streamed_load()
    assert sd.metadata["transfer"] == "streamed"
    assert [t.tolist() for t in sd.train] == [t.tolist() for t in clean.train]
    assert requests_faulty == requests_clean + 2  # each failed answer asked for once more


def test_persistent_blob_failure_is_a_streaming_error(archive):
    archive.inject("503", times=20, match="/blobs/")
    with pytest.raises(StreamingError, match=r"/blobs/.* failed 5 times \(HTTP 503\)"):
        load_spikedata_from_dandi(
            archive.ids["sorted-a.nwb"], api_base=archive.api_base, stream=True, stream_only=True
        )
    archive.clear_faults()


def test_nwb_loader_reads_a_url(archive):
    with DandiClient(archive.api_base) as client:
        blob = client.blob_url(archive.ids["sorted-a.nwb"])
    sd = load_spikedata_from_nwb(blob)
    assert [t.tolist() for t in sd.train] == [[1.0, 2.5], [7.25]]
    assert sd.metadata["source_file"] == blob.split("?")[0]
    assert sd.metadata["transfer"] == "streamed" and sd.metadata["bytes_read"] > 0


def test_server_without_range_falls_back_to_download(archive):
    archive.inject("no-range", match="/blobs/")
    with pytest.warns(UserWarning, match="streaming asset .* failed .*downloading it instead"):
        sd = load_spikedata_from_dandi(
            archive.ids["sorted-b.nwb"], api_base=archive.api_base, stream=True
        )
    assert sd.metadata["transfer"] == "downloaded"
    assert [t.tolist() for t in sd.train] == [[11.0, 12.5], [17.25]]


def test_streaming_only_raises_instead(archive):
    archive.inject("no-range", match="/blobs/")
    with pytest.raises(RangeNotSupportedError, match=r"answered HTTP 200 to a Range request"):
        load_spikedata_from_dandi(
            archive.ids["sorted-b.nwb"], api_base=archive.api_base, stream=True, stream_only=True
        )


def test_corrupt_bytes_name_the_url(archive):
    with pytest.raises(StreamingError, match=r"http://127\.0\.0\.1:\d+/blobs/.* not a readable"):
        load_spikedata_from_dandi(
            archive.ids["garbage"], api_base=archive.api_base, stream=True, stream_only=True
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback's warning
        with pytest.raises(ValueError, match="not a readable NWB/HDF5 file"):
            load_spikedata_from_dandi(
                archive.ids["garbage"], api_base=archive.api_base, stream=True
            )


def test_token_never_reaches_the_blob_host(archive):
    start = len(archive.requests)
    sd = load_spikedata_from_dandi(
        archive.ids["secret"],
        api_base=archive.api_base,
        api_token=archive.token,
        stream=True,
        stream_only=True,
    )
    assert sd.metadata["transfer"] == "streamed"
    assert [t.tolist() for t in sd.train] == [[1.0, 2.5], [7.25]]
    seen = archive.requests[start:]
    blob = [r for r in seen if r.server == "blob"]
    # The listed contentUrl of an embargoed blob is refused; the signed redirect is used.
    assert "X-Amz-Signature" not in blob[0].path
    assert blob[1:] and all("X-Amz-Signature=" in r.path for r in blob[1:])
    assert all("Authorization" not in r.headers for r in blob)
    assert all(
        r.headers.get("Authorization") == f"token {archive.token}"
        for r in seen
        if r.server == "api"
    )
