"""Benchmark spikelab's NWB loader against pynwb, SpikeInterface and the I/O floor.

Run ``python benchmarks/bench_nwb.py [--units N] [--spikes S] [--repeats R] [--file PATH]``.

A synthetic but realistic NWB file is written once with pynwb (default: 1,000 units and
10 M spikes with lognormal firing rates over one hour, each unit's times sorted, in seconds
on a 30 kHz grid; 384 electrodes with x/y/z, location and group; a Units table with an
``electrodes`` column, a ``resolution`` and the QC columns ``snr``, ``isi_violations_ratio``
and ``quality``) and reused by later runs; ``--file`` may also name a real NWB file, which is
then used as it is. These ways of getting every unit's spike train out of it are timed in
the same run:

``spikelab pynwb``
    ``load_spikedata_from_nwb(path)``: a full load to ``SpikeData`` through pynwb (trains in
    ms, ids, QC columns and electrode facts per unit, file metadata).
``spikelab h5py``
    ``load_spikedata_from_nwb(path, prefer_pynwb=False)``: the same through h5py alone.
``pynwb``
    ``NWBHDF5IO(path).read().units.to_dataframe()``: what a pynwb user writes.
``SpikeInterface``
    ``read_nwb_sorting(path, t_start=0.0)`` (h5py backend, unit properties loaded) followed by
    ``get_unit_spike_train(unit_id)`` for every unit with the default cache, each train
    converted from samples to ms so both sides deliver the same thing (the peer the goal is
    judged against). ``t_start`` is given because SpikeInterface 0.105 refuses a file that
    holds an unnamed ElectricalSeries without it; with none it would default to 0 anyway.
    The sampling rate comes from the Units ``resolution`` (else 30 kHz is assumed: the rate
    only scales the samples, never a count).
``SI per-unit``
    The same with ``use_cache=False``: one h5py slice read per unit, shown for context.
``floor``
    h5py reads of the whole ``units/spike_times`` and ``units/spike_times_index`` datasets:
    the least any loader has to do.
``pynwb read only``
    ``NWBHDF5IO(path).read()`` and nothing else: the object tree pynwb builds before any
    spike is read, the least any loader that goes through pynwb has to do; shown for
    context, as a multiple of the floor.

The page cache is warmed before anything is timed. Each method runs in its own fresh
process: one untimed warm-up call, then ``--repeats`` timed calls, keeping the best. The
peak RSS reported is that process's high-water mark above its resident size just before the
first call (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; ``resource.getrusage``
would not do, as a spawned process inherits its parent's high-water mark). The headline is
a row of ratios per spikelab path, two of them checked against the goals: spikelab time /
floor time (<= 1.5) and SpikeInterface time / spikelab time (>= 10); SI per-unit time /
spikelab time and pynwb time / spikelab time are shown without a goal. The exit status is 1
when a goal is missed. Spike counts per unit from both spikelab paths and SpikeInterface must
agree, or the run stops with an error.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import h5py
import hdmf
import numpy as np
import pynwb
import spikeinterface
from _harness import (
    in_fresh_process,
    proc_status_kb,
    reset_peak_rss,
    sorted_unit_columns,
    warm_page_cache,
)
from hdmf.common import VectorData
from pynwb import NWBHDF5IO, NWBFile
from pynwb.misc import Units
from spikeinterface.core import BaseSorting
from spikeinterface.extractors import read_nwb_sorting

from spikelab.loaders import load_spikedata_from_nwb

FS_HZ = 30_000.0
DURATION_S = 3600.0
N_ELECTRODES = 384
SEED = 20240501
FLOOR_MULTIPLE_GOAL = 1.5
SPEEDUP_GOAL = 10.0
IDENTIFIER_PREFIX = "spikelab-bench-nwb"
SPIKELAB_PATHS = ("spikelab pynwb", "spikelab h5py")

Counts = dict[int, int]


@dataclass(frozen=True)
class Measurement:
    """Best time of one method, its peak extra memory, and its spike count per unit."""

    name: str
    best_s: float
    peak_rss_mb: float | None
    counts: Counts


# ---------------------------------------------------------------------------- the file


def identifier(n_units: int, n_spikes: int) -> str:
    """The NWB identifier that marks a file as this benchmark's data set."""
    return f"{IDENTIFIER_PREFIX}-{n_units}-{n_spikes}-{SEED}"


def build_file(path: Path, n_units: int, n_spikes: int) -> None:
    """Write an NWB file whose Units table looks like a spike sorter's export.

    Firing rates are lognormal across units and every unit has at least one spike. Each
    unit's times are uniform samples over ``DURATION_S`` at ``FS_HZ``, sorted, in seconds.
    Uncompressed datasets in hdmf's default layout, ragged ``electrodes`` with its index,
    and the ``resolution`` attribute on ``spike_times`` (``_harness.sorted_unit_columns``).
    """
    rng = np.random.default_rng(SEED)
    nwbfile = NWBFile(
        session_description="spikelab NWB benchmark: synthetic sorted units",
        identifier=identifier(n_units, n_spikes),
        session_start_time=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    device = nwbfile.create_device(name="Neuropixels 1.0", description="synthetic probe")
    group = nwbfile.create_electrode_group(
        name="shank0", description="single shank", location="CA1", device=device
    )
    for channel in range(N_ELECTRODES):
        nwbfile.add_electrode(
            x=float(16 + 32 * (channel % 2) + 8 * (channel // 2 % 2)),
            y=float(20 * (channel // 2)),
            z=0.0,
            location="CA1" if channel < N_ELECTRODES // 2 else "DG",
            group=group,
        )

    columns = sorted_unit_columns(nwbfile, rng, n_units, n_spikes, int(DURATION_S * FS_HZ), FS_HZ)
    qc = [
        VectorData(
            name="snr", description="signal-to-noise ratio", data=rng.gamma(4.0, 2.0, n_units)
        ),
        VectorData(
            name="isi_violations_ratio",
            description="refractory-period violations ratio",
            data=rng.exponential(0.05, n_units),
        ),
        VectorData(
            name="quality",
            description="curation label",
            data=np.where(rng.random(n_units) < 0.4, "good", "mua").tolist(),
        ),
    ]
    nwbfile.units = Units(
        name="units",
        description="synthetic sorted units",
        id=np.arange(n_units),
        columns=[*columns, *qc],
        resolution=1.0 / FS_HZ,
    )
    with NWBHDF5IO(path, "w") as io:
        io.write(nwbfile)


def ensure_file(path: Path, n_units: int, n_spikes: int) -> None:
    """Build the file unless it holds this synthetic data set or someone's NWB file."""
    if path.exists():
        try:
            with h5py.File(path, "r") as handle:
                found = handle["identifier"].asstr()[()] if "identifier" in handle else ""
        except OSError as error:
            raise SystemExit(f"{path} is not an HDF5 file; not overwriting it") from error
        if found == identifier(n_units, n_spikes):
            print(f"reusing {path}")
            return
        if not found.startswith(IDENTIFIER_PREFIX):
            print(f"using the NWB file {path} as it is")
            return
    print(f"building {path} ({n_units} units, {n_spikes:,} spikes) ...", flush=True)
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    build_file(path, n_units, n_spikes)
    size_mb = path.stat().st_size / 2**20
    print(f"built in {time.perf_counter() - start:.1f} s ({size_mb:.0f} MB)")


# ---------------------------------------------------------------------------- the methods


def _spikelab_counts(path: Path, prefer_pynwb: bool) -> Counts:
    """Full spikelab load to SpikeData; the spike count of each unit id."""
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    ids = sd.get_neuron_attribute("unit_id")
    return dict(zip(ids, (train.size for train in sd.train), strict=True))


def load_spikelab_pynwb(path: Path) -> Counts:
    """Full spikelab load through pynwb; the spike count of each unit id."""
    return _spikelab_counts(path, prefer_pynwb=True)


def load_spikelab_h5py(path: Path) -> Counts:
    """Full spikelab load through h5py; the spike count of each unit id."""
    return _spikelab_counts(path, prefer_pynwb=False)


def load_pynwb(path: Path) -> Counts:
    """pynwb's Units table as a DataFrame; the spike count of each unit id."""
    with NWBHDF5IO(path, "r") as io:
        frame = io.read().units.to_dataframe()
    return {int(unit_id): len(times) for unit_id, times in frame["spike_times"].items()}


def _read_sorting(path: Path) -> BaseSorting:
    """SpikeInterface's sorting; the rate comes from Units.resolution when the file has one."""
    with h5py.File(path, "r") as handle:
        has_resolution = "resolution" in handle["units/spike_times"].attrs
    return read_nwb_sorting(path, t_start=0.0, sampling_frequency=None if has_resolution else FS_HZ)


def _spikeinterface_counts(path: Path, use_cache: bool) -> Counts:
    """Every unit's SpikeInterface train, in ms, kept in memory; the count per unit."""
    sorting = _read_sorting(path)
    to_ms = 1000.0 / sorting.get_sampling_frequency()
    trains = {
        int(unit_id): sorting.get_unit_spike_train(unit_id, use_cache=use_cache) * to_ms
        for unit_id in sorting.unit_ids
    }
    return {unit_id: train.size for unit_id, train in trains.items()}


def load_spikeinterface(path: Path) -> Counts:
    """SpikeInterface ``read_nwb_sorting`` and every unit's train (default cache)."""
    return _spikeinterface_counts(path, use_cache=True)


def load_spikeinterface_per_unit(path: Path) -> Counts:
    """The same, with one slice read per unit (``use_cache=False``), for context."""
    return _spikeinterface_counts(path, use_cache=False)


def load_pynwb_tree(path: Path) -> Counts:
    """pynwb's object tree of the file, no data read."""
    with NWBHDF5IO(path, "r") as io:
        io.read()
    return {}


def load_floor(path: Path) -> Counts:
    """Read the spike times and their index whole; nothing per unit."""
    with h5py.File(path, "r") as handle:
        times = handle["units/spike_times"][()]
        ends = handle["units/spike_times_index"][()]
    if ends.size and ends[-1] > times.size:
        raise ValueError(f"{path}: spike_times_index points past {times.size} spike times")
    return {}


METHODS: dict[str, Callable[[Path], Counts]] = {
    "floor": load_floor,
    "pynwb read only": load_pynwb_tree,
    "spikelab pynwb": load_spikelab_pynwb,
    "spikelab h5py": load_spikelab_h5py,
    "pynwb": load_pynwb,
    "SpikeInterface": load_spikeinterface,
    "SI per-unit": load_spikeinterface_per_unit,
}


def measure(name: str, path: Path, repeats: int) -> Measurement:
    """Run one method in this (fresh) process: a warm-up call, then the best of ``repeats``."""
    method = METHODS[name]
    baseline_kb = reset_peak_rss()
    counts = method(path)
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        counts = method(path)
        best = min(best, time.perf_counter() - start)
    peak_mb = None if baseline_kb is None else (proc_status_kb("VmHWM") - baseline_kb) / 1024
    return Measurement(name, best, peak_mb, counts)


# ---------------------------------------------------------------------------- the report


def check_counts(results: dict[str, Measurement]) -> None:
    """Fail unless both spikelab paths and SpikeInterface agree on every unit's spike count."""
    peer = results["SpikeInterface"].counts
    for name in SPIKELAB_PATHS:
        counts = results[name].counts
        differing = [(unit, peer.get(unit), counts.get(unit)) for unit in peer.keys() | counts]
        differing = [entry for entry in differing if entry[1] != entry[2]]
        if differing:
            raise SystemExit(
                f"{len(differing)} units differ, as (unit, SpikeInterface count, {name} count): "
                f"{sorted(differing, key=str)[:5]}"
            )
    print(
        f"sanity: all {len(peer)} units ({sum(peer.values()):,} spikes) have the same spike "
        f"count in {', '.join(SPIKELAB_PATHS)} and SpikeInterface"
    )


def report(results: dict[str, Measurement]) -> bool:
    """Print the table and the ratios of each spikelab path; True when every goal is met."""
    print(f"\n{'method':<16}{'best (s)':>10}{'peak RSS (MB)':>16}")
    for m in results.values():
        peak = "n/a" if m.peak_rss_mb is None else f"{m.peak_rss_mb:.0f}"
        print(f"{m.name:<16}{m.best_s:>10.3f}{peak:>16}")

    floor_s = results["floor"].best_s
    peer_s = results["SpikeInterface"].best_s
    print(
        f"\npynwb's object tree alone takes {results['pynwb read only'].best_s / floor_s:.2f}x "
        "the floor, before a loader that goes through pynwb has read a single spike"
    )
    print(
        f"\n{'path':<16}{'/ floor':>10}{'SI /':>10}{'SI per-unit /':>15}{'pynwb /':>10}"
        f"   goals: <= {FLOOR_MULTIPLE_GOAL:g}x floor, >= {SPEEDUP_GOAL:g}x SpikeInterface"
    )
    all_met = True
    for name in SPIKELAB_PATHS:
        spikelab_s = results[name].best_s
        floor_multiple = spikelab_s / floor_s
        speedup = peer_s / spikelab_s
        floor_ok = floor_multiple <= FLOOR_MULTIPLE_GOAL
        speedup_ok = speedup >= SPEEDUP_GOAL
        all_met = all_met and floor_ok and speedup_ok
        verdict = ", ".join(
            [
                f"floor {'met' if floor_ok else 'MISSED'}",
                f"SpikeInterface {'met' if speedup_ok else 'MISSED'}",
            ]
        )
        print(
            f"{name:<16}{floor_multiple:>9.2f}x{speedup:>9.1f}x"
            f"{results['SI per-unit'].best_s / spikelab_s:>14.1f}x"
            f"{results['pynwb'].best_s / spikelab_s:>9.1f}x   {verdict}"
        )
    return all_met


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--units", type=int, default=1_000, help="number of units")
    parser.add_argument("--spikes", type=int, default=10_000_000, help="number of spikes")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method")
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="NWB file to build or reuse (default: one in the temp directory)",
    )
    args = parser.parse_args()
    if args.spikes < args.units or args.units < 1 or args.repeats < 1:
        parser.error("need --units >= 1, --spikes >= --units and --repeats >= 1")
    return args


def main() -> int:
    """Build or reuse the file, measure each method in a fresh process, report."""
    args = parse_args()
    path = args.file or Path(tempfile.gettempdir()) / (
        f"spikelab_bench_nwb_{args.units}_{args.spikes}.nwb"
    )
    ensure_file(path, args.units, args.spikes)
    warm_page_cache(path)
    print(
        f"numpy {np.__version__}, h5py {h5py.__version__}, pynwb {pynwb.__version__}, "
        f"hdmf {hdmf.__version__}, spikeinterface {spikeinterface.__version__}, "
        f"{os.cpu_count()} CPUs; 1 warm-up + best of {args.repeats}, each method in a fresh process"
    )

    results: dict[str, Measurement] = {}
    for name in METHODS:
        results[name] = in_fresh_process(measure, name, path, args.repeats)
        print(f"  {name}: {results[name].best_s:.3f} s", flush=True)

    check_counts(results)
    return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
