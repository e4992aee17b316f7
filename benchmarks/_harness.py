"""Helpers shared by the benchmarks: fresh processes, peak memory, page cache, sorted units."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


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
