"""Benchmark spikelab's streamed DANDI load against downloading, pynwb + remfile and lazynwb.

Run ``python benchmarks/bench_stream.py [--gigabytes 1.0] [--units 500] [--spikes 2000000]
[--latency-ms 20] [--bandwidth-mb-s 0] [--repeats 3]``.

An NWB file is written once to the temp directory with pynwb and reused by later runs: a
64-channel int16 ``ElectricalSeries`` of ``--gigabytes`` GB (10**9 bytes) at 30 kHz in 4 MiB
HDF5 chunks, written through a ``GenericDataChunkIterator`` that generates seeded noise one
64 MiB buffer at a time (so the build's memory stays small however large the file), and a
Units table of ``--units`` units and ``--spikes`` spikes (lognormal firing rates, each
unit's times sorted, in seconds on the 30 kHz grid, with ``electrodes``, ``quality`` and
``snr`` columns). Everything else is pynwb's default layout: uncompressed, as
``NWBHDF5IO.write`` leaves it. The file is built under a temporary name and renamed, so an
interrupted build is never reused. A tiny file of the same layout is written too, for the
warm-up calls. Both are published as assets of the stand-in archive ``spikelab.testing``
(``DandiStandIn``: an API server and a blob server, real HTTP servers on 127.0.0.1, on
threads of this process, that stream file-backed assets from disk). Every answer of either
server waits ``--latency-ms`` first (``latency_seconds``): by default the link model is that
round trip on top of loopback bandwidth, which is unlimited next to a real wide-area link's,
so it flatters the download. ``--bandwidth-mb-s`` (10**6 bytes/s) adds a link of that
capacity, shared by every blob answer (``bandwidth_bytes_per_second``), for a second model
closer to a real one. The file is read into the page cache and the archive's digests are
computed before anything is timed.

These ways of getting the large asset's Units table are timed in the same run:

``floor``
    The least any reader has to do: the blob URL from the API (one round trip), then the
    stored bytes of ``units/spike_times`` and ``units/spike_times_index`` in two concurrent
    range requests, at byte offsets taken beforehand from the local copy, decoded with numpy.
    No reader can know those offsets without reading the file's metadata first, so the row
    bounds from below what a streamed load can reach on this link: the ratios of the peers'
    times to it are the best any streamed reader could claim.
``streamed floor``
    The round trips any streamed reader has to make, each at its least: the URL, the
    file's first and last bytes (the superblock and root group say where the rest lies),
    then, in one round trip, the 256 KiB block that holds the Units group's object header
    (where the datasets' offsets are) unless the edges hold it, together with the floor's
    two ranges, as a reader that guesses right where the Units lie can fetch them; offsets
    from the local copy again. It is the floor plus one round trip, the least a reader that
    does not know the offsets beforehand can take.
``spikelab stream``
    ``load_spikedata_from_dandi(asset_id, api_base=..., stream=True, stream_only=True)``:
    asset metadata and blob URL from the API, then the Units, electrodes and file metadata
    over HTTP range requests, to ``SpikeData`` (the headline).
``pynwb + remfile``
    What most users write today: ``DandiClient(api_base).blob_url(asset_id)``, then
    ``remfile.File(url)`` -> ``h5py.File`` ->
    ``NWBHDF5IO(file=..., load_namespaces=True).read().units.to_dataframe()``. Resolving the
    URL is timed too, as a user has to do it (spikelab's rows include their API requests).
``lazynwb``
    ``lazynwb.get_df(url, "units", exclude_array_columns=False)`` (spike times included, so
    it delivers what the others do) with the same URL resolution, when lazynwb is installed
    and reads the stand-in; otherwise the row says why it was skipped. Every call gets a new
    on-disk catalog cache in the scratch folder and cleared in-process caches, so it never
    answers from an earlier call or run (nor writes to ``~/.cache``).
``spikelab download``
    ``load_spikedata_from_dandi(asset_id, api_base=...)``, the default: the whole file is
    downloaded to a temporary folder (inside the scratch folder, removed after the method),
    its sha256 verified against the archive's, the Units loaded from disk, the copy deleted.

Each method runs in its own fresh process (``spawn``), so the servers and the client never
share a GIL and no method inherits another's imports or caches: one untimed warm-up call on
the tiny asset (it pays the imports, pynwb's namespace loading and the like, which a session
pays once), then ``--repeats`` timed calls on the large one, keeping the best; dirty pages
are flushed (``os.sync``) before every call, so the build's or a download's write-back never
lands in a timed call. The download runs last. Two byte counts are given: what the blob
server sent during the call (``blob_bytes_served`` before and after, once it has stopped
moving) and, for spikelab, the ``bytes_read`` it reports, which must agree with the server.
The server's count includes bytes a client asked for and dropped: remfile learns the size
with a plain GET that it closes after the headers, and the server has pushed a few MB of the
body into the socket by then, a number that varies from call to call. The blob and API
requests of the best call are counted from the stand-in's log. Every method must deliver the
same number of units and spikes as the floor, or the run stops with an error.

The headline is three checks of spikelab's streamed load, the goals of issue 22: its time
<= 1.5x the floor's (a streamed reader has to read the file's metadata before it knows where
the spike times lie, so it needs more round trips than the floor: this bounds what they and
its decoding may cost); the bytes the server sent for it <= 1.1x the floor's (no more than the
floor's ranges and the metadata); and pynwb + remfile's time / its time >= 5, the peer that
most users run today. The exit status is 1 when one is missed. The ratio to the streamed
floor, the download's and lazynwb's are printed without a goal.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import pynwb
import remfile
import requests
from _harness import sorted_unit_columns
from hdmf.common import VectorData
from hdmf.data_utils import GenericDataChunkIterator
from pynwb import NWBHDF5IO, NWBFile
from pynwb.ecephys import ElectricalSeries
from pynwb.misc import Units

from spikelab.loaders import load_spikedata_from_dandi
from spikelab.loaders.dandi._client import DandiClient
from spikelab.testing import DandiStandIn

FS_HZ = 30_000.0
N_CHANNELS = 64
SAMPLE_BYTES = 2  # int16
SEED = 20240501
DANDISET = "000000"
IDENTIFIER_PREFIX = "spikelab-bench-stream"
CHUNK_ROWS = 32_768  # HDF5 chunks of the raw series: 32768 x 64 int16 = 4 MiB
BUFFER_CHUNKS = 16  # chunks generated per iterator step (64 MiB): bounds the build's memory
TIME_GOAL = 1.5  # spikelab stream's time / the floor's, at most
BYTES_GOAL = 1.1  # bytes the server sent for spikelab stream / for the floor, at most
PEER_SPEEDUP_GOAL = 5.0  # pynwb + remfile's time / spikelab stream's, at least
SETTLE_SECONDS = 0.2
MB = 1e6

FLOOR = "floor"
STREAMED_FLOOR = "streamed floor"
METADATA_BLOCK = 256 * 1024  # what one round trip for the Units metadata fetches, at least
STREAM = "spikelab stream"
PYNWB = "pynwb + remfile"
LAZYNWB = "lazynwb"
DOWNLOAD = "spikelab download"


class Span(NamedTuple):
    """Where a dataset's stored bytes lie in the file, and how to decode them."""

    offset: int
    size: int
    dtype: str
    elements: int


class Target(NamedTuple):
    """One published asset, where its spike times and their index lie, its size and where
    the Units group's object header is."""

    api_base: str
    asset_id: str
    spike_times: Span
    spike_times_index: Span
    size: int
    units_header: int


class Loaded(NamedTuple):
    """What one call delivered, and the bytes spikelab says it read (None for the others)."""

    units: int
    spikes: int
    client_bytes: int | None = None


@dataclass
class Measurement:
    """Every timed call of one method, and what the archive saw during the best one."""

    name: str
    times: list[float] = field(default_factory=list)
    served_per_call: list[int] = field(default_factory=list)
    loaded: Loaded = Loaded(0, 0)
    served_bytes: int = 0
    blob_requests: int = 0
    api_requests: int = 0
    skipped: str | None = None

    @property
    def best_s(self) -> float:
        """The fastest call."""
        return min(self.times)


def lazynwb_version() -> str:
    """lazynwb's version, or "not installed"."""
    try:
        return version("lazynwb")
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------------------- the files


class NoiseIterator(GenericDataChunkIterator):  # type: ignore[misc]
    """Seeded int16 noise of ``n_samples`` x ``N_CHANNELS``, generated one buffer at a time."""

    def __init__(self, n_samples: int, **kwargs: Any) -> None:
        self._n_samples = n_samples
        super().__init__(**kwargs)

    def _get_data(self, selection: tuple[slice, ...]) -> np.ndarray:
        rows, columns = selection[0], selection[1]
        start, stop, _ = rows.indices(self._n_samples)
        rng = np.random.default_rng((SEED, start))
        block = rng.integers(-500, 500, size=(stop - start, N_CHANNELS), dtype=np.int16)
        return block[:, columns]

    def _get_maxshape(self) -> tuple[int, int]:
        return (self._n_samples, N_CHANNELS)

    def _get_dtype(self) -> np.dtype:
        return np.dtype(np.int16)


def identifier(n_samples: int, n_units: int, n_spikes: int) -> str:
    """The NWB identifier that marks a file as this benchmark's data set."""
    return f"{IDENTIFIER_PREFIX}-{n_samples}-{n_units}-{n_spikes}-{SEED}"


def build_file(path: Path, n_samples: int, n_units: int, n_spikes: int) -> None:
    """Write the raw series and the Units table with pynwb, in its default layout."""
    rng = np.random.default_rng(SEED)
    duration_s = n_samples / FS_HZ
    nwbfile = NWBFile(
        session_description="spikelab streaming benchmark: raw series and sorted units",
        identifier=identifier(n_samples, n_units, n_spikes),
        session_start_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="probe", description="synthetic 64-channel probe")
    group = nwbfile.create_electrode_group(
        name="shank0", description="single shank", location="CA1", device=device
    )
    for channel in range(N_CHANNELS):
        nwbfile.add_electrode(
            x=float(16 * (channel % 2)), y=float(20 * channel), z=0.0, location="CA1", group=group
        )
    chunk_rows = min(CHUNK_ROWS, n_samples)
    series = NoiseIterator(
        n_samples,
        chunk_shape=(chunk_rows, N_CHANNELS),
        buffer_shape=(min(BUFFER_CHUNKS * chunk_rows, n_samples), N_CHANNELS),
        display_progress=False,
    )
    nwbfile.add_acquisition(
        ElectricalSeries(
            name="ElectricalSeries",
            data=series,
            electrodes=nwbfile.create_electrode_table_region(list(range(N_CHANNELS)), "all"),
            rate=FS_HZ,
            conversion=0.195e-6,
        )
    )

    columns = sorted_unit_columns(nwbfile, rng, n_units, n_spikes, n_samples, FS_HZ)
    nwbfile.units = Units(
        name="units",
        description=f"synthetic sorted units over {duration_s:.0f} s",
        id=np.arange(n_units),
        columns=[
            *columns,
            VectorData(
                name="snr", description="signal-to-noise", data=rng.gamma(4.0, 2.0, n_units)
            ),
            VectorData(
                name="quality",
                description="curation label",
                data=np.where(rng.random(n_units) < 0.4, "good", "mua").tolist(),
            ),
        ],
        resolution=1.0 / FS_HZ,
    )
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)


def ensure_file(path: Path, n_samples: int, n_units: int, n_spikes: int) -> None:
    """Build the file unless it already holds this data set (built under a temporary name)."""
    wanted = identifier(n_samples, n_units, n_spikes)
    if path.is_file():
        try:
            with h5py.File(path, "r") as handle:
                if handle["identifier"].asstr()[()] == wanted:
                    print(f"reusing {path}")
                    return
        except (OSError, KeyError):
            pass
    gigabytes = n_samples * N_CHANNELS * SAMPLE_BYTES / 1e9
    print(
        f"building {path} ({gigabytes:.3g} GB raw, {n_units} units, {n_spikes:,} spikes) ...",
        flush=True,
    )
    start = time.perf_counter()
    staging = path.with_name(f"{path.stem}.partial.nwb")  # pynwb warns about other suffixes
    staging.unlink(missing_ok=True)
    build_file(staging, n_samples, n_units, n_spikes)
    os.replace(staging, path)
    print(f"built in {time.perf_counter() - start:.1f} s ({path.stat().st_size / MB:,.0f} MB)")


def stored_span(path: Path, name: str) -> Span:
    """Where the dataset ``units/<name>`` lies in the file, checking it can be fetched whole.

    hdmf writes each Units column in one go, so its chunks follow each other on disk in
    logical order; the floor fetches and decodes such a column as one byte range.
    """
    with h5py.File(path, "r") as handle:
        dataset = handle["units"][name]
        if dataset.compression is not None or dataset.ndim != 1:
            raise SystemExit(f"units/{name} is compressed or not 1-D: the floor cannot decode it")
        if dataset.chunks is None:
            offset, size = dataset.id.get_offset(), dataset.id.get_storage_size()
        else:
            chunks = sorted(
                (dataset.id.get_chunk_info(i) for i in range(dataset.id.get_num_chunks())),
                key=lambda info: info.chunk_offset,
            )
            offset, size = chunks[0].byte_offset, sum(info.size for info in chunks)
            if any(
                later.byte_offset != earlier.byte_offset + earlier.size
                for earlier, later in zip(chunks, chunks[1:], strict=False)
            ):
                raise SystemExit(f"units/{name} is not stored in one piece")
        return Span(int(offset), int(size), dataset.dtype.str, dataset.shape[0])


def make_target(api_base: str, asset_id: str, path: Path) -> Target:
    """One published asset, with where its spike times and their index lie."""
    with h5py.File(path, "r") as handle:
        units_header = h5py.h5o.get_info(handle["units"].id).addr
    return Target(
        api_base,
        asset_id,
        stored_span(path, "spike_times"),
        stored_span(path, "spike_times_index"),
        path.stat().st_size,
        int(units_header),
    )


def warm_page_cache(path: Path) -> None:
    """Read the file once so the blob server never waits for the disk."""
    with path.open("rb") as handle:
        while handle.read(64 * 2**20):
            pass


# ---------------------------------------------------------------------------- the methods


def _blob_url(target: Target) -> str:
    with DandiClient(target.api_base) as client:
        return client.blob_url(target.asset_id)


def _fetch(url: str, span: Span) -> np.ndarray:
    """One range request for a dataset's stored bytes, decoded to its elements.

    The body is read whole from the socket (``raw.read``): ``response.content`` would
    iterate over it in 10 KB pieces, at half the speed or less.
    """
    headers = {"Range": f"bytes={span.offset}-{span.offset + span.size - 1}"}
    with requests.get(url, headers=headers, stream=True, timeout=60) as response:
        body = response.raw.read(decode_content=True)
    if response.status_code != 206 or len(body) != span.size:
        raise RuntimeError(f"range request answered {response.status_code}, {len(body)} bytes")
    return np.frombuffer(body, dtype=span.dtype)[: span.elements]


def fetch_floor(target: Target) -> Loaded:
    """The least any reader has to do: resolve the URL, then fetch both datasets at once."""
    url = _blob_url(target)
    with ThreadPoolExecutor(max_workers=2) as pool:
        times, index = pool.map(_fetch, (url, url), (target.spike_times, target.spike_times_index))
    if not np.isfinite(times).all() or index[-1] != times.size:
        raise RuntimeError("the fetched spike times do not decode")
    return Loaded(index.size, int(index[-1]))


def fetch_streamed_floor(target: Target) -> Loaded:
    """The round trips any streamed reader makes, each at its least: the floor plus one.

    The URL; the file's first and last bytes (where the superblock and root group tell
    where the rest lies); then, at once, the block holding the Units group's header (a
    reader learns the datasets' offsets there) and both datasets, as a reader that guesses
    right where the Units lie fetches them. The offsets come from the local copy, as the
    floor's do.
    """
    url = _blob_url(target)
    block = METADATA_BLOCK
    tail = max(block, (target.size - 2 * block) // block * block)
    header = target.units_header // block * block
    edges = [Span(0, block, "u1", block), Span(tail, target.size - tail, "u1", 0)]
    wanted = [target.spike_times, target.spike_times_index]
    if block <= header < tail:  # not among the edges: fetched with the datasets
        wanted.append(Span(header, min(block, target.size - header), "u1", 0))
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        list(pool.map(_fetch, (url, url), edges))
        times, index, *_ = pool.map(_fetch, [url] * len(wanted), wanted)
    if not np.isfinite(times).all() or index[-1] != times.size:
        raise RuntimeError("the fetched spike times do not decode")
    return Loaded(index.size, int(index[-1]))


def load_spikelab_stream(target: Target) -> Loaded:
    """spikelab's streamed load of the Units table to SpikeData."""
    sd = load_spikedata_from_dandi(
        target.asset_id, api_base=target.api_base, stream=True, stream_only=True
    )
    if sd.metadata["transfer"] != "streamed":
        raise RuntimeError(f"expected a streamed load, got {sd.metadata['transfer']!r}")
    return Loaded(sd.N, sum(train.size for train in sd.train), sd.metadata["bytes_read"])


def load_spikelab_download(target: Target) -> Loaded:
    """spikelab's default: verified download to a temporary folder, load, delete."""
    sd = load_spikedata_from_dandi(target.asset_id, api_base=target.api_base)
    if not sd.metadata["digest_verified"]:
        raise RuntimeError("the download was not verified against the archive's digest")
    return Loaded(sd.N, sum(train.size for train in sd.train), sd.metadata["bytes_read"])


def load_pynwb_remfile(target: Target) -> Loaded:
    """remfile -> h5py -> pynwb ``units.to_dataframe()``, as most users write it."""
    remote = remfile.File(_blob_url(target))
    try:
        with h5py.File(remote, "r") as handle:
            with NWBHDF5IO(file=handle, mode="r", load_namespaces=True) as io:
                frame = io.read().units.to_dataframe()
    finally:
        remote.close()
    return Loaded(len(frame), int(sum(len(times) for times in frame["spike_times"])))


def load_lazynwb(target: Target) -> Loaded:
    """lazynwb's Units table with the spike times column."""
    import lazynwb

    lazynwb.clear_cache()  # in-process caches; the on-disk catalog gets a new file per call
    catalog = Path(tempfile.gettempdir()) / f"lazynwb-catalog-{time.monotonic_ns()}.sqlite"
    os.environ["LAZYNWB_CATALOG_CACHE_PATH"] = str(catalog)
    frame = lazynwb.get_df(
        _blob_url(target),
        "units",
        exclude_array_columns=False,
        disable_progress=True,
        as_polars=False,
    )
    return Loaded(len(frame), int(sum(len(times) for times in frame["spike_times"])))


METHODS: dict[str, Callable[[Target], Loaded]] = {
    FLOOR: fetch_floor,
    STREAMED_FLOOR: fetch_streamed_floor,
    STREAM: load_spikelab_stream,
    PYNWB: load_pynwb_remfile,
    LAZYNWB: load_lazynwb,
    DOWNLOAD: load_spikelab_download,
}


def init_worker(scratch: str) -> None:
    """Keep a worker's temporary files (the download, lazynwb's catalog) in ``scratch``."""
    tempfile.tempdir = scratch
    os.environ["TMPDIR"] = scratch


def call(name: str, target: Target) -> tuple[float, Loaded]:
    """Time one call of a method in this worker process."""
    method = METHODS[name]
    start = time.perf_counter()
    loaded = method(target)
    return time.perf_counter() - start, loaded


# ---------------------------------------------------------------------------- the runs


def settled_bytes(dandi: DandiStandIn) -> int:
    """``blob_bytes_served`` once no handler has added to it for ``SETTLE_SECONDS``."""
    last = dandi.blob_bytes_served
    while True:
        time.sleep(SETTLE_SECONDS)
        now = dandi.blob_bytes_served
        if now == last:
            return now
        last = now


def measure(
    name: str,
    dandi: DandiStandIn,
    targets: dict[str, Target],
    repeats: int,
    pool: ProcessPoolExecutor,
) -> Measurement:
    """A warm-up call on the tiny asset, then the best of ``repeats`` on the large one."""
    result = Measurement(name)
    try:
        pool.submit(call, name, targets["warm-up"]).result()
    except Exception as error:  # noqa: BLE001 - lazynwb is optional: say why it is left out
        if name != LAZYNWB:
            raise
        reason = "not installed" if isinstance(error, ImportError) else "fails on the stand-in"
        last = traceback.format_exception_only(error)[-1].strip()
        result.skipped = f"{reason} ({last[:200]})"
        return result
    for _ in range(repeats):
        os.sync()  # earlier writes (the build, a download) must not be flushed during a call
        served = settled_bytes(dandi)
        blob, api = dandi.count("blob"), dandi.count("api")
        seconds, loaded = pool.submit(call, name, targets["large"]).result()
        served = settled_bytes(dandi) - served
        result.times.append(seconds)
        result.served_per_call.append(served)
        if seconds <= min(result.times):
            result.loaded, result.served_bytes = loaded, served
            result.blob_requests = dandi.count("blob") - blob
            result.api_requests = dandi.count("api") - api
    return result


def publish(dandi: DandiStandIn, files: dict[str, Path]) -> dict[str, Target]:
    """Add the files as assets and have the archive compute their digests, untimed."""
    targets = {
        name: make_target(
            dandi.api_base,
            dandi.add_asset(DANDISET, f"sub-bench/sub-bench_{name}_ecephys.nwb", path),
            path,
        )
        for name, path in files.items()
    }
    with DandiClient(dandi.api_base) as client:
        for target in targets.values():
            client.describe(target.asset_id)
    return targets


# ---------------------------------------------------------------------------- the report


def check_deliveries(results: dict[str, Measurement]) -> None:
    """Fail unless every method delivered the same units and spikes as the floor."""
    expected = results[FLOOR].loaded
    for m in results.values():
        if m.skipped is None and (m.loaded.units, m.loaded.spikes) != (
            expected.units,
            expected.spikes,
        ):
            raise SystemExit(
                f"{m.name} delivered {m.loaded.units} units and {m.loaded.spikes:,} spikes, "
                f"the floor {expected.units} and {expected.spikes:,}"
            )
    print(f"\nsanity: every method delivered {expected.units} units and {expected.spikes:,} spikes")
    for name in (STREAM, DOWNLOAD):
        m = results[name]
        if m.loaded.client_bytes != m.served_bytes:
            raise SystemExit(
                f"{name} counted {m.loaded.client_bytes:,} bytes read, the server sent "
                f"{m.served_bytes:,}"
            )
    print("sanity: spikelab's own bytes_read equals what the server sent, in both modes")
    for m in results.values():
        if len(set(m.served_per_call)) > 1:
            served = ", ".join(f"{b / MB:.2f}" for b in m.served_per_call)
            print(f"note: {m.name} was sent a different number of MB per call: {served}")


def report(results: dict[str, Measurement], file_size: int) -> bool:
    """Print the table and the ratios to the floor and the peers; True when the goals are met."""
    floor = results[FLOOR]
    print(
        f"\n{'method':<19}{'best (s)':>10}{'x floor':>9}{'MB served':>11}{'x floor':>9}"
        f"{'% of file':>11}{'MB (own count)':>16}{'blob reqs':>11}{'API reqs':>10}"
    )
    for m in results.values():
        if m.skipped is not None:
            print(f"{m.name:<19}skipped: {m.skipped}")
            continue
        own = "" if m.loaded.client_bytes is None else f"{m.loaded.client_bytes / MB:.2f}"
        print(
            f"{m.name:<19}{m.best_s:>10.3f}{m.best_s / floor.best_s:>9.2f}"
            f"{m.served_bytes / MB:>11.2f}{m.served_bytes / floor.served_bytes:>9.3f}"
            f"{100 * m.served_bytes / file_size:>10.2f}%{own:>16}"
            f"{m.blob_requests:>11}{m.api_requests:>10}"
        )

    stream = results[STREAM]
    slower = stream.best_s / floor.best_s
    time_ok = slower <= TIME_GOAL
    print(
        f"\nspikelab's stream takes {slower:.2f}x the floor's time "
        f"(goal <= {TIME_GOAL:g}x: {'met' if time_ok else 'MISSED'}; "
        f"{stream.blob_requests} blob requests to the floor's {floor.blob_requests})"
    )
    streamed_floor = results[STREAMED_FLOOR].best_s
    print(
        f"spikelab's stream takes {stream.best_s / streamed_floor:.2f}x the streamed floor's "
        f"time, which is {streamed_floor / floor.best_s:.2f}x the floor's (no goal)"
    )
    more = stream.served_bytes / floor.served_bytes
    bytes_ok = more <= BYTES_GOAL
    print(
        f"spikelab's stream was sent {more:.3f}x the floor's bytes "
        f"(goal <= {BYTES_GOAL:g}x: {'met' if bytes_ok else 'MISSED'}; "
        f"{100 * stream.served_bytes / file_size:.2f}% of the {file_size / MB:,.0f} MB file)"
    )
    peer = results[PYNWB].best_s / stream.best_s
    peer_ok = peer >= PEER_SPEEDUP_GOAL
    print(
        f"spikelab's stream is {peer:.1f}x faster than pynwb + remfile "
        f"(goal >= {PEER_SPEEDUP_GOAL:g}x: {'met' if peer_ok else 'MISSED'}; "
        f"the floor is {results[PYNWB].best_s / floor.best_s:.1f}x faster)"
    )
    print(
        f"spikelab's stream is {results[DOWNLOAD].best_s / stream.best_s:.1f}x faster than its "
        "own download + load (no goal)"
    )
    lazy = results[LAZYNWB]
    if lazy.skipped is None:
        print(
            f"spikelab's stream is {lazy.best_s / stream.best_s:.1f}x faster than lazynwb (no goal)"
        )
    else:
        print("lazynwb: no ratio (skipped)")
    return time_ok and bytes_ok and peer_ok


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="raw series size (10**9 B)")
    parser.add_argument("--units", type=int, default=500, help="number of units")
    parser.add_argument("--spikes", type=int, default=2_000_000, help="number of spikes")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every answer")
    parser.add_argument(
        "--bandwidth-mb-s", type=float, default=0.0, help="shared blob link (0: loopback)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
    args = parser.parse_args()
    if (
        args.gigabytes <= 0
        or args.units < 1
        or args.spikes < args.units
        or args.latency_ms < 0
        or args.bandwidth_mb_s < 0
        or args.repeats < 1
    ):
        parser.error(
            "need --gigabytes > 0, --spikes >= --units >= 1, --latency-ms >= 0, "
            "--bandwidth-mb-s >= 0, --repeats >= 1"
        )
    return args


def main() -> int:
    """Build or reuse the files, serve them with latency, measure each method, report."""
    args = parse_args()
    temp = Path(tempfile.gettempdir())
    n_samples = round(args.gigabytes * 1e9 / (N_CHANNELS * SAMPLE_BYTES))
    files = {
        "large": temp / f"spikelab_bench_stream_{n_samples}_{args.units}_{args.spikes}.nwb",
        "warm-up": temp / "spikelab_bench_stream_warmup.nwb",
    }
    ensure_file(files["large"], n_samples, args.units, args.spikes)
    ensure_file(files["warm-up"], 30_000, 20, 2_000)
    file_size = files["large"].stat().st_size
    warm_page_cache(files["large"])
    print(
        f"pynwb {pynwb.__version__}, h5py {h5py.__version__}, remfile "
        f"{version('remfile')}, lazynwb {lazynwb_version()}, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; {args.latency_ms:g} ms before every answer, "
        f"{f'{args.bandwidth_mb_s:g} MB/s' if args.bandwidth_mb_s else 'loopback'} bandwidth; "
        f"1 warm-up (tiny asset) + best of {args.repeats}, each method in a fresh process"
    )

    results: dict[str, Measurement] = {}
    context = multiprocessing.get_context("spawn")
    scratch = Path(tempfile.mkdtemp(prefix="spikelab_bench_stream_"))
    try:
        with DandiStandIn(scratch / "archive") as dandi:
            targets = publish(dandi, files)
            dandi.latency_seconds = args.latency_ms / 1000.0
            dandi.bandwidth_bytes_per_second = args.bandwidth_mb_s * 1e6
            for name in METHODS:
                work = scratch / name.replace(" ", "_").replace("+", "")
                work.mkdir()
                with ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=context,
                    initializer=init_worker,
                    initargs=(str(work),),
                ) as pool:
                    results[name] = measure(name, dandi, targets, args.repeats, pool)
                left = [p.name for p in work.iterdir() if not p.name.startswith("lazynwb")]
                if left:
                    print(f"note: {name} left {left} in its temporary folder (deleted now)")
                shutil.rmtree(work)
                m = results[name]
                times = ", ".join(f"{t:.3f}" for t in m.times)
                print(f"  {name}: {m.skipped or times + ' s'}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    check_deliveries(results)
    return 0 if report(results, file_size) else 1


if __name__ == "__main__":
    sys.exit(main())
