"""Helpers shared by the benchmarks: fresh processes, peak memory, page cache, sorted units."""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def isolated_prefect(prefix: str) -> Path:
    """A new scratch folder holding Prefect's home and spikelab's cache, set in the environment.

    Prefect reads its settings when first imported: call this before anything imports it
    (``spikelab.flows`` does). Logging is quietened to warnings.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PREFECT_HOME"] = str(scratch / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
    os.environ["SPIKELAB_CACHE_DIR"] = str(scratch / "spikelab-cache")
    return scratch


def proc_status_kb(field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of ``/proc/self/status``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int | None:
    """Reset this process's RSS high-water mark; its resident size in kB, None if unsupported.

    A spawned process inherits its parent's high-water mark, so ``resource.getrusage`` cannot
    tell a method's own peak; ``/proc/self/clear_refs`` resets it (Linux).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return proc_status_kb("VmRSS")
    except OSError:
        return None


def warm_page_cache(path: Path) -> None:
    """Read a file, or every file of a folder, once so no method pays for the disk."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as handle:
            while handle.read(1 << 24):
                pass


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """Run ``function(*args)`` in a newly spawned process (own imports, caches and memory)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def sorted_unit_columns(
    nwbfile: Any,
    rng: np.random.Generator,
    n_units: int,
    n_spikes: int,
    n_samples: int,
    fs_hz: float,
) -> list[Any]:
    """The Units columns of a spike sorter's NWB export, for ``pynwb.misc.Units(columns=...)``.

    ``spike_times`` (s, on the ``fs_hz`` grid of ``n_samples``; lognormal rates, every unit
    with at least one spike, each unit's times sorted) and a peak ``electrodes`` row per unit
    (from ``nwbfile``'s electrodes table), each with its index. The columns are given whole:
    ``add_unit`` per unit would build a Python list of every spike; the file is the same.
    """
    from hdmf.common import DynamicTableRegion, VectorData, VectorIndex

    rates = rng.lognormal(mean=0.0, sigma=1.0, size=n_units)
    counts = np.maximum(1, np.floor(rates / rates.sum() * n_spikes)).astype(np.int64)
    counts[np.argmax(counts)] += n_spikes - counts.sum()
    samples = rng.integers(0, n_samples, size=n_spikes)
    ends = np.cumsum(counts)
    for start, end in zip(ends - counts, ends, strict=True):
        samples[start:end].sort()
    spike_times = VectorData(
        name="spike_times", description="spike times (s)", data=samples / fs_hz
    )
    electrodes = DynamicTableRegion(
        name="electrodes",
        description="peak electrode of each unit",
        data=rng.integers(0, len(nwbfile.electrodes), size=n_units),
        table=nwbfile.electrodes,
    )
    return [
        spike_times,
        VectorIndex(name="spike_times_index", data=ends, target=spike_times),
        electrodes,
        VectorIndex(name="electrodes_index", data=np.arange(1, n_units + 1), target=electrodes),
    ]


# The Prefect server counts as idle once it uses under SETTLE_IDLE_SHARE of a CPU over a poll.
SETTLE_POLL_S = 1.0
SETTLE_IDLE_SHARE = 0.05
SETTLE_TIMEOUT_S = 600.0


def _descendants(pid: int) -> list[int]:
    """Ids of every process started by ``pid``, children first (Linux ``/proc``)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:  # the thread ended meanwhile
            continue
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def server_cpu_s() -> float:
    """CPU seconds used so far by this process's child processes: the Prefect server."""
    ticks = 0
    for pid in _descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime and stime
    return ticks / os.sysconf("SC_CLK_TCK")


def settle_server() -> float:
    """Wait until the Prefect server has worked off its backlog; the seconds waited.

    The server records a run's events after the flow has returned; a flow started
    meanwhile competes with that work for the CPUs (and its API calls may meet 503s).
    """
    start = time.perf_counter()
    before = server_cpu_s()
    while time.perf_counter() - start < SETTLE_TIMEOUT_S:
        time.sleep(SETTLE_POLL_S)
        after = server_cpu_s()
        if after - before < SETTLE_IDLE_SHARE * SETTLE_POLL_S:
            return time.perf_counter() - start
        before = after
    print(f"  warning: the Prefect server was still busy after {SETTLE_TIMEOUT_S:.0f} s")
    return time.perf_counter() - start
