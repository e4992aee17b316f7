"""Measurement helpers shared by the benchmarks: fresh processes, peak memory, page cache."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

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


def unit_spike_samples(
    rng: np.random.Generator, n_units: int, n_spikes: int, n_samples: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Spike samples of units with lognormal rates: (samples, unit after unit; counts)."""
    rates = rng.lognormal(mean=0.0, sigma=1.0, size=n_units)
    counts = np.maximum(1, np.floor(rates / rates.sum() * n_spikes)).astype(np.int64)
    counts[np.argmax(counts)] += n_spikes - counts.sum()
    samples = rng.integers(0, n_samples, size=n_spikes)
    ends = np.cumsum(counts)
    for start, end in zip(ends - counts, ends, strict=True):
        samples[start:end].sort()
    return samples, counts
