"""Benchmark spikelab's verified DANDI download against curl, and its memory against size.

Run ``python benchmarks/bench_download.py [--size-mb 500] [--small-mb 100] [--repeats 3]``.

Two files of random bytes (``--size-mb`` and ``--small-mb``, MB = 2**20 bytes, generated
from a fixed seed, incompressible) are written once to the temp directory and reused by later
runs. They are published as assets of the stand-in DANDI archive ``spikelab.testing``
(``DandiStandIn``: an API server and a blob server, both real HTTP servers on 127.0.0.1 that
stream file-backed assets in 1 MiB chunks). The stand-in runs in this process, on its own
threads; its digests are computed, and the files read into the page cache, before anything
is timed. Every download lands in a scratch folder of the temp directory and is deleted
before the next call. These ways of getting the large asset onto disk are timed in the same
run:

``spikelab``
    The download part of ``load_spikedata_from_dandi``, through the same internals:
    ``DandiClient(api_base)``, ``client.describe(asset_id)`` (the asset record),
    ``client.blob_url(asset_id)`` (the API's download redirect) and ``download_asset``,
    which streams the blob to ``<file>.partial`` while computing its sha256 (the stand-in
    publishes ``dandi:sha2-256``, so the whole file is verified before it is renamed into
    place). The two small API requests are timed too: they are part of what a user waits for.
``curl``
    ``curl -s -o <file> <blob url>`` of the same blob URL, without any verification (the
    peer the goal is judged against); only the file size is checked afterwards.
``curl+openssl``
    The same followed by ``openssl dgst -sha256 <file>``, checked against the published
    digest: the like-for-like comparison with spikelab, shown without a goal. ``openssl`` is
    used rather than ``sha256sum`` because it hashes with the same OpenSSL code as Python's
    ``hashlib``; coreutils 9.1's ``sha256sum`` is not linked to OpenSSL and hashed 500 MB
    about four times slower on the machine this was written on, so it would time its own
    hash rather than the download.
``spikelab small``
    spikelab again on the ``--small-mb`` asset, for its peak memory.

Each method runs in its own fresh process (``spawn``), so the server and the client never
share an interpreter or a GIL, and curl is started by a Python process just as spikelab runs
in one: one untimed warm-up call, then ``--repeats`` timed calls, keeping the best; dirty
pages are flushed (``os.sync``) before every call, so one call's write-back does not land on
the next. The peak RSS reported is the measuring process's high-water mark over the calls
(Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` just before the first call;
``resource.getrusage`` would not do, as a spawned process inherits its parent's high-water
mark), shown whole and as the extra above the resident size at that reset; it is not
reported for the curl rows, whose work happens in curl's own process. The headline is two
ratios, checked against the goals: spikelab throughput / curl throughput (>= 0.8) and
spikelab's peak RSS on the large asset / on the small one (<= 1.3: memory must not grow
with the file; the whole peak is compared, as the extra alone is a buffer or two of the
download, too small for a ratio to mean anything). The exit status is 1 when a goal is missed.
All clients share one Python server: were it the bottleneck, curl's throughput would be its
ceiling, which would only make the goal easier to meet. The header line gives the 1-minute
load average, as the numbers only mean something when nothing else competes for the CPUs.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from _harness import in_fresh_process, proc_status_kb, reset_peak_rss

from spikelab.loaders.dandi._client import DandiClient
from spikelab.loaders.dandi._download import download_asset
from spikelab.loaders.dandi._records import SHA256
from spikelab.testing import DandiStandIn

MB = 2**20
WRITE_CHUNK = 16 * MB
SEED = 20240501
DANDISET = "000000"
THROUGHPUT_GOAL = 0.8
MEMORY_GROWTH_GOAL = 1.3


@dataclass(frozen=True)
class Asset:
    """One published asset: how to ask the stand-in for it and what it must hash to."""

    size_mb: int
    api_base: str
    asset_id: str
    blob_url: str
    sha256: str


@dataclass(frozen=True)
class Measurement:
    """Best time of one method on one asset, its peak RSS and the extra above its start."""

    name: str
    size_mb: int
    best_s: float
    peak_rss_mb: float | None
    extra_rss_mb: float | None

    @property
    def mb_per_s(self) -> float:
        """Throughput of the best call, in MB (2**20 bytes) per second."""
        return self.size_mb / self.best_s


# ---------------------------------------------------------------------------- the files


def ensure_file(path: Path, size_mb: int) -> None:
    """Write ``size_mb`` MB of seeded random bytes to ``path``, unless that size is there."""
    if path.is_file() and path.stat().st_size == size_mb * MB:
        print(f"reusing {path}")
        return
    print(f"writing {path} ({size_mb} MB of random bytes) ...", flush=True)
    rng = np.random.default_rng(SEED)
    staging = path.with_name(path.name + ".partial")
    with staging.open("wb") as out:
        for offset in range(0, size_mb * MB, WRITE_CHUNK):
            out.write(rng.bytes(min(WRITE_CHUNK, size_mb * MB - offset)))
    os.replace(staging, path)


def publish(dandi: DandiStandIn, path: Path, size_mb: int) -> Asset:
    """Add ``path`` as an asset, have its digests computed, and find its blob URL."""
    asset_id = dandi.add_asset(DANDISET, f"sub-bench/sub-bench_{size_mb}MB_ecephys.nwb", path)
    with DandiClient(dandi.api_base) as client:
        record = client.describe(asset_id)  # the stand-in hashes the file here
        blob_url = client.blob_url(asset_id)
    return Asset(size_mb, dandi.api_base, asset_id, blob_url, dict(record.digests)[SHA256])


# ---------------------------------------------------------------------------- the methods


def download_spikelab(asset: Asset, destination: Path) -> None:
    """What ``load_spikedata_from_dandi`` does to fetch an asset: sha256-verified streaming."""
    with DandiClient(asset.api_base) as client:
        record = client.describe(asset.asset_id)
        download_asset(client, client.blob_url(asset.asset_id), record, destination)


def download_curl(asset: Asset, destination: Path) -> None:
    """``curl -s -o`` of the blob URL, unverified apart from the size of the file."""
    subprocess.run(["curl", "-s", "-o", str(destination), asset.blob_url], check=True)
    if destination.stat().st_size != asset.size_mb * MB:
        raise RuntimeError(f"curl wrote {destination.stat().st_size} bytes to {destination}")


def download_curl_openssl(asset: Asset, destination: Path) -> None:
    """``curl -s -o`` of the blob URL, then ``openssl dgst -sha256`` of the file, checked."""
    download_curl(asset, destination)
    output = subprocess.run(
        ["openssl", "dgst", "-sha256", "-r", str(destination)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if output.split()[0] != asset.sha256:
        raise RuntimeError(f"the sha256 of {destination} does not match the published digest")


METHODS: dict[str, Callable[[Asset, Path], None]] = {
    "curl": download_curl,
    "curl+openssl": download_curl_openssl,
    "spikelab": download_spikelab,
    "spikelab small": download_spikelab,
}


def measure(name: str, asset: Asset, scratch: Path, repeats: int) -> Measurement:
    """Run one method in this (fresh) process: a warm-up call, then the best of ``repeats``."""
    method = METHODS[name]
    destination = scratch / f"{name.replace(' ', '_').replace('+', '_')}.nwb"
    baseline_kb = reset_peak_rss()
    best = float("inf")
    for call in range(repeats + 1):
        destination.unlink(missing_ok=True)
        gc.collect()
        os.sync()
        start = time.perf_counter()
        method(asset, destination)
        if call:
            best = min(best, time.perf_counter() - start)
    destination.unlink()
    if baseline_kb is None or name.startswith("curl"):
        return Measurement(name, asset.size_mb, best, None, None)
    peak_kb = proc_status_kb("VmHWM")
    return Measurement(name, asset.size_mb, best, peak_kb / 1024, (peak_kb - baseline_kb) / 1024)


# ---------------------------------------------------------------------------- the report


def curl_version() -> str:
    """The first line of ``curl --version``; stop with a hint when curl or openssl is missing."""
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        raise SystemExit("curl and openssl are needed: apt-get install -y curl openssl")
    return subprocess.run(
        ["curl", "--version"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]


def report(results: dict[str, Measurement]) -> bool:
    """Print the table and the two ratios; True when both goals are met."""
    print(
        f"\n{'method':<16}{'asset (MB)':>11}{'best (s)':>10}{'MB/s':>9}"
        f"{'peak RSS (MB)':>15}{'extra (MB)':>12}"
    )
    for m in results.values():
        peak = "n/a" if m.peak_rss_mb is None else f"{m.peak_rss_mb:.1f}"
        extra = "n/a" if m.extra_rss_mb is None else f"{m.extra_rss_mb:.2f}"
        print(
            f"{m.name:<16}{m.size_mb:>11}{m.best_s:>10.3f}{m.mb_per_s:>9.0f}{peak:>15}{extra:>12}"
        )
    spikelab, small = results["spikelab"], results["spikelab small"]
    speed = spikelab.mb_per_s / results["curl"].mb_per_s
    like_for_like = spikelab.mb_per_s / results["curl+openssl"].mb_per_s
    speed_ok = speed >= THROUGHPUT_GOAL
    print(
        f"\nspikelab's verified download runs at {speed:.2f}x curl's throughput "
        f"(goal >= {THROUGHPUT_GOAL:g}x: {'met' if speed_ok else 'MISSED'})"
    )
    print(f"spikelab runs at {like_for_like:.2f}x the throughput of curl + openssl (no goal)")
    if spikelab.peak_rss_mb is None or small.peak_rss_mb is None:
        print("peak RSS is not measurable here (no /proc/self/clear_refs): memory goal MISSED")
        return False
    growth = spikelab.peak_rss_mb / small.peak_rss_mb
    memory_ok = growth <= MEMORY_GROWTH_GOAL
    print(
        f"spikelab's peak RSS on {spikelab.size_mb} MB is {growth:.2f}x that on "
        f"{small.size_mb} MB ({spikelab.peak_rss_mb:.1f} vs {small.peak_rss_mb:.1f} MB; goal <= "
        f"{MEMORY_GROWTH_GOAL:g}x: {'met' if memory_ok else 'MISSED'})"
    )
    return speed_ok and memory_ok


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=500, help="size of the large asset")
    parser.add_argument("--small-mb", type=int, default=100, help="size of the small asset")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
    args = parser.parse_args()
    if not 1 <= args.small_mb < args.size_mb or args.repeats < 1:
        parser.error("need 1 <= --small-mb < --size-mb and --repeats >= 1")
    return args


def main() -> int:
    """Write or reuse the files, serve them, measure each method in a fresh process, report."""
    args = parse_args()
    version = curl_version()
    temp = Path(tempfile.gettempdir())
    files = {
        mb: temp / f"spikelab_bench_download_{mb}MB.bin" for mb in (args.size_mb, args.small_mb)
    }
    for size_mb, path in files.items():
        ensure_file(path, size_mb)
    print(
        f"{version}\nrequests {requests.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
        f"1 warm-up + best of {args.repeats}, each method in a fresh process"
    )

    results: dict[str, Measurement] = {}
    scratch = Path(tempfile.mkdtemp(prefix="spikelab_bench_download_"))
    try:
        with DandiStandIn(scratch) as dandi:
            assets = {mb: publish(dandi, path, mb) for mb, path in files.items()}
            for name in METHODS:
                asset = assets[args.small_mb if name.endswith("small") else args.size_mb]
                results[name] = in_fresh_process(measure, name, asset, scratch, args.repeats)
                print(f"  {name}: {results[name].best_s:.3f} s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
