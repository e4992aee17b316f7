"""Benchmark spikelab's threshold detection on raw HDF5 traces against SpikeInterface.

Run ``python benchmarks/bench_detect.py [--channels 64] [--fs 20000] [--seconds 300]
[--repeats 1] [--no-warmup] [--file PATH]``.

An HDF5 file of int16 raw traces is written once (default: 64 channels x 20 kHz x 300 s,
768 MB) and reused by later runs. The traces are shaped (channels, samples) and stored in
uncompressed chunks of (channels, 65536) samples: white Gaussian noise (sd 20 counts, a DC
offset per channel) plus biphasic spikes of 32 units at known times, each unit seen on its
peak channel (6-20 noise sd) and, decaying, on up to three channels either side. A second
dataset holds the first 60 s of the same traces; the injected spikes are stored too.
Two ways of detecting spikes are then timed in the same run, on the full and on the 60 s
dataset:

``spikelab``
    ``load_spikedata_from_hdf5_raw_thresholded(path, dataset, fs_Hz=fs)`` with its
    defaults: zero-phase Butterworth band-pass 300-6000 Hz of order 3, threshold 5 sd of the
    filtered trace, direction ``both``, one event per crossing.
``SpikeInterface``
    The same HDF5 dataset wrapped as a recording (a small ``BaseRecording`` whose segment
    reads ``dataset[:, start:stop].T``, so both sides read the same file the same way), then
    ``bandpass_filter(freq_min=300, freq_max=6000, filter_order=3, dtype='float32')`` (the
    same Butterworth filter, forward-backward; its margin is SpikeInterface's default 5 /
    300 Hz = 16.7 ms) and ``detect_peaks(method='by_channel', peak_sign='both',
    detect_threshold=5)`` with its other defaults (noise from the MAD of 20 random 0.5 s
    chunks, 1 ms exclusion sweep) and ``n_jobs=1, chunk_duration='1s'`` (its default
    chunking; both sides then use one core).

The page cache is warmed before anything is timed. Each method runs in its own fresh
process: one untimed warm-up call (``--no-warmup`` skips it), then ``--repeats`` timed
calls, keeping the best. Throughput is channels x samples per second of the best call. The
peak RSS reported is that process's high-water mark above its resident size just before the
first call (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``). The headline is two
ratios, checked against the goals: spikelab throughput / SpikeInterface throughput on the
full dataset (>= 1) and spikelab's peak RSS on the full / on the 60 s dataset (<= 1.3,
since the loader works chunk by chunk). The exit status is 1 when a goal is missed.

As a sanity check, detected events are matched to the injected spikes on the same channel
within +-1 ms: recall is the share of injected spikes of at least 8 noise sd on a channel
that have an event there, precision the share of events near an injected spike of any size
on their channel. The run stops with an error when spikelab's recall is below 95 %. Event
counts differ by design: spikelab reports the first sample of each threshold crossing with
the threshold at 5 sd of the whole filtered trace (spikes included), SpikeInterface every
local extremum beyond 5 MAD-estimated noise sd (so often both trough and rebound).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import spikeinterface
from _harness import in_fresh_process, proc_status_kb, reset_peak_rss, warm_page_cache
from numpy.typing import NDArray
from spikeinterface.core import BaseRecording, BaseRecordingSegment
from spikeinterface.preprocessing import bandpass_filter
from spikeinterface.sortingcomponents.peak_detection import detect_peaks

from spikelab.loaders import load_spikedata_from_hdf5_raw_thresholded

SEED = 20240611
SHORT_SECONDS = 60.0
H5_CHUNK_SAMPLES = 65536
NOISE_SD = 20.0
N_UNITS = 32
SPREAD_CHANNELS = 3
REFRACTORY_S = 0.0025
WAVEFORM_OFFSETS = np.arange(-10, 30)  # samples around the trough
DETECTABLE_SNR = 8.0
MATCH_TOLERANCE_S = 0.001
LOWCUT_HZ, HIGHCUT_HZ = 300.0, 6000.0  # spikelab's default band
RECALL_FLOOR = 0.95
THROUGHPUT_GOAL = 1.0
MEMORY_GOAL = 1.3
FULL, SHORT = "traces", "traces_60s"
SI_JOB_KWARGS = {"n_jobs": 1, "chunk_duration": "1s", "progress_bar": False}

Events = tuple[NDArray[np.int64], NDArray[np.int64]]
"""Channel and sample index of every detected event."""


@dataclass(frozen=True)
class Measurement:
    """Best time of one method on one dataset, its peak extra memory, and its events."""

    name: str
    dataset: str
    best_s: float
    peak_rss_mb: float | None
    events: Events


@dataclass(frozen=True)
class GroundTruth:
    """Injected spikes, one entry per spike and channel it shows on, sorted by sample."""

    sample: NDArray[np.int64]
    channel: NDArray[np.int64]
    snr: NDArray[np.float64]
    """Trough depth on that channel in noise standard deviations."""


# ---------------------------------------------------------------------------- the file


def waveform() -> NDArray[np.float64]:
    """A biphasic spike on ``WAVEFORM_OFFSETS``: trough of depth 1 at 0, slower rebound."""
    t = WAVEFORM_OFFSETS.astype(np.float64)
    shape = -np.exp(-((t / 3.0) ** 2)) + 0.35 * np.exp(-(((t - 9.0) / 6.0) ** 2))
    return shape / -shape.min()


def injected_spikes(
    rng: np.random.Generator, n_channels: int, n_samples: int, fs: float
) -> GroundTruth:
    """Spike times of ``N_UNITS`` units (lognormal rates, refractory), spread over channels."""
    peak_channels = rng.integers(0, n_channels, size=N_UNITS)
    peak_snr = rng.uniform(6.0, 20.0, size=N_UNITS)
    rates = np.clip(rng.lognormal(np.log(4.0), 0.8, size=N_UNITS), 0.5, 40.0)
    edge = int(-WAVEFORM_OFFSETS[0])
    samples, channels, snrs = [], [], []
    for peak, snr, rate in zip(peak_channels, peak_snr, rates, strict=True):
        n_expected = int(rate * n_samples / fs * 1.2) + 10
        intervals = REFRACTORY_S + rng.exponential(1.0 / rate - REFRACTORY_S, size=n_expected)
        times = np.cumsum(intervals)
        spikes = (times[times * fs < n_samples - len(WAVEFORM_OFFSETS)] * fs).astype(np.int64)
        spikes = spikes[spikes >= edge]
        for channel in range(peak - SPREAD_CHANNELS, peak + SPREAD_CHANNELS + 1):
            if 0 <= channel < n_channels:
                samples.append(spikes)
                channels.append(np.full(spikes.size, channel))
                snrs.append(np.full(spikes.size, snr * np.exp(-abs(channel - peak) / 1.2)))
    sample = np.concatenate(samples)
    order = np.argsort(sample, kind="stable")
    return GroundTruth(sample[order], np.concatenate(channels)[order], np.concatenate(snrs)[order])


def build_file(path: Path, meta: dict[str, Any]) -> None:
    """Write the traces, their first ``SHORT_SECONDS`` and the injected spikes to ``path``."""
    n_channels, fs = int(meta["channels"]), float(meta["fs"])
    n_samples, n_short = int(meta["seconds"] * fs), int(SHORT_SECONDS * fs)
    rng = np.random.default_rng(SEED)
    truth = injected_spikes(rng, n_channels, n_samples, fs)
    offsets = rng.uniform(-200.0, 200.0, size=(n_channels, 1)).astype(np.float32)
    shape = waveform()
    chunks = (n_channels, H5_CHUNK_SAMPLES)
    with h5py.File(path, "w") as handle:
        full = handle.create_dataset(FULL, (n_channels, n_samples), np.int16, chunks=chunks)
        short = handle.create_dataset(SHORT, (n_channels, n_short), np.int16, chunks=chunks)
        for start in range(0, n_samples, H5_CHUNK_SAMPLES):
            stop = min(start + H5_CHUNK_SAMPLES, n_samples)
            block = rng.standard_normal((n_channels, stop - start), dtype=np.float32)
            block *= NOISE_SD
            block += offsets
            lo, hi = np.searchsorted(
                truth.sample, [start - WAVEFORM_OFFSETS[-1], stop - WAVEFORM_OFFSETS[0]]
            )
            index = truth.sample[lo:hi, None] + WAVEFORM_OFFSETS[None, :] - start
            values = (truth.snr[lo:hi, None] * NOISE_SD) * shape[None, :]
            inside = (index >= 0) & (index < stop - start)
            rows = np.broadcast_to(truth.channel[lo:hi, None], index.shape)
            np.add.at(block, (rows[inside], index[inside]), values[inside])
            traces = np.clip(np.rint(block), -32768, 32767).astype(np.int16)
            full[:, start:stop] = traces
            if start < n_short:
                short[:, start : min(stop, n_short)] = traces[:, : n_short - start]
        group = handle.create_group("ground_truth")
        group["sample"], group["channel"], group["snr"] = truth.sample, truth.channel, truth.snr
        handle.attrs["meta"] = json.dumps(meta)


def ensure_file(path: Path, meta: dict[str, Any]) -> None:
    """Build the file unless it already holds these traces; build to a temporary name first."""
    if path.exists():
        try:
            with h5py.File(path, "r") as handle:
                found = json.loads(str(handle.attrs["meta"]))
        except (OSError, KeyError):
            raise SystemExit(
                f"{path} is not a file this benchmark wrote; not overwriting it"
            ) from None
        if found == meta:
            print(f"reusing {path}")
            return
    print(f"building {path} ...", flush=True)
    start = time.perf_counter()
    partial = path.with_suffix(".partial")
    build_file(partial, meta)
    partial.replace(path)
    print(f"built in {time.perf_counter() - start:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")


def read_ground_truth(path: Path, n_samples: int) -> GroundTruth:
    """The injected spikes whose waveform lies wholly within the first ``n_samples``."""
    with h5py.File(path, "r") as handle:
        sample = handle["ground_truth/sample"][()]
        keep = sample < n_samples - WAVEFORM_OFFSETS[-1]
        return GroundTruth(
            sample[keep],
            handle["ground_truth/channel"][()][keep],
            handle["ground_truth/snr"][()][keep],
        )


def dataset_shape(path: Path, dataset: str) -> tuple[int, int]:
    """(channels, samples) of a traces dataset."""
    with h5py.File(path, "r") as handle:
        n_channels, n_samples = handle[dataset].shape
    return int(n_channels), int(n_samples)


# ---------------------------------------------------------------------------- the methods


class HDF5RecordingSegment(BaseRecordingSegment):
    """Reads samples of an open (channels, samples) HDF5 dataset as (samples, channels)."""

    def __init__(self, traces: h5py.Dataset, fs: float) -> None:
        BaseRecordingSegment.__init__(self, sampling_frequency=fs)
        self._traces = traces

    def get_num_samples(self) -> int:
        return int(self._traces.shape[1])

    def get_traces(
        self,
        start_frame: int | None = None,
        end_frame: int | None = None,
        channel_indices: Any = None,
    ) -> NDArray[np.int16]:
        traces = self._traces[:, start_frame:end_frame].T
        return traces if channel_indices is None else traces[:, channel_indices]


class HDF5Recording(BaseRecording):
    """A SpikeInterface recording over an open (channels, samples) HDF5 dataset."""

    def __init__(self, traces: h5py.Dataset, fs: float) -> None:
        BaseRecording.__init__(self, fs, np.arange(traces.shape[0]), traces.dtype)
        self._serializability["json"] = False
        self._serializability["pickle"] = False
        self.add_recording_segment(HDF5RecordingSegment(traces, fs))
        self._kwargs = {"traces": traces, "fs": fs}


def detect_spikelab(path: Path, dataset: str, fs: float) -> Events:
    """spikelab's loader with its defaults; the channel and sample of each event."""
    sd = load_spikedata_from_hdf5_raw_thresholded(path, dataset, fs_Hz=fs)
    channels = [
        np.full(train.size, attributes["electrode"], dtype=np.int64)
        for train, attributes in zip(sd.train, sd.neuron_attributes, strict=True)
    ]
    samples = [np.rint(train * (fs / 1000.0)).astype(np.int64) for train in sd.train]
    return np.concatenate(channels), np.concatenate(samples)


def detect_spikeinterface(path: Path, dataset: str, fs: float) -> Events:
    """SpikeInterface band-pass and ``by_channel`` peaks; the channel and sample of each."""
    with h5py.File(path, "r") as handle:
        recording = bandpass_filter(
            HDF5Recording(handle[dataset], fs),
            freq_min=LOWCUT_HZ,
            freq_max=HIGHCUT_HZ,
            filter_order=3,
            dtype="float32",
        )
        peaks = detect_peaks(
            recording,
            method="by_channel",
            method_kwargs={
                "peak_sign": "both",
                "detect_threshold": 5,
                "random_slices_kwargs": {"seed": SEED},
            },
            job_kwargs=SI_JOB_KWARGS,
        )
    return peaks["channel_index"].astype(np.int64), peaks["sample_index"].astype(np.int64)


METHODS: dict[str, Callable[[Path, str, float], Events]] = {
    "spikelab": detect_spikelab,
    "SpikeInterface": detect_spikeinterface,
}


def measure(
    name: str, path: Path, dataset: str, fs: float, repeats: int, warmup: bool
) -> Measurement:
    """Run one method in this (fresh) process: an optional warm-up, then best of ``repeats``."""
    method = METHODS[name]
    baseline_kb = reset_peak_rss()
    if warmup:
        method(path, dataset, fs)
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        events = method(path, dataset, fs)
        best = min(best, time.perf_counter() - start)
    peak_mb = None if baseline_kb is None else (proc_status_kb("VmHWM") - baseline_kb) / 1024
    return Measurement(name, dataset, best, peak_mb, events)


# ---------------------------------------------------------------------------- the report


def _near(
    sorted_targets: NDArray[np.int64], queries: NDArray[np.int64], tolerance: int
) -> NDArray[np.bool_]:
    """Whether each query lies within ``tolerance`` samples of some target."""
    if sorted_targets.size == 0:
        return np.zeros(queries.size, dtype=bool)
    index = np.searchsorted(sorted_targets, queries - tolerance)
    found = index < sorted_targets.size
    found[found] = sorted_targets[index[found]] <= queries[found] + tolerance
    return found


def match(truth: GroundTruth, events: Events, tolerance: int) -> tuple[int, int, int, int]:
    """(detectable spikes found, detectable spikes, events near a spike, events) per channel."""
    event_channel, event_sample = events
    found = detectable = near = 0
    for channel in np.unique(np.concatenate([truth.channel, event_channel])):
        detected = np.sort(event_sample[event_channel == channel])
        mine = truth.channel == channel
        injected = truth.sample[mine]  # sorted
        strong = injected[truth.snr[mine] >= DETECTABLE_SNR]
        found += int(_near(detected, strong, tolerance).sum())
        detectable += strong.size
        near += int(_near(injected, detected, tolerance).sum())
    return found, detectable, near, event_sample.size


def report(
    results: list[Measurement],
    truths: dict[str, GroundTruth],
    shapes: dict[str, tuple[int, int]],
    fs: float,
) -> bool:
    """Print the table, the sanity check and the two ratios; True when both goals are met."""
    tolerance = round(MATCH_TOLERANCE_S * fs)
    print(
        f"\n{'method':<16}{'data (s)':>9}{'best (s)':>10}{'M ch*samples/s':>16}"
        f"{'peak RSS (MB)':>15}{'events':>10}{'recall':>22}{'precision':>22}"
    )
    throughput: dict[tuple[str, str], float] = {}
    for m in results:
        n_channels, n_samples = shapes[m.dataset]
        throughput[m.name, m.dataset] = n_channels * n_samples / m.best_s
        found, detectable, near, n_events = match(truths[m.dataset], m.events, tolerance)
        peak_text = "n/a" if m.peak_rss_mb is None else f"{m.peak_rss_mb:.0f}"
        recall = f"{found}/{detectable} ({found / detectable:.1%})"
        precision = f"{near}/{n_events} ({near / max(n_events, 1):.1%})"
        print(
            f"{m.name:<16}{n_samples / fs:>9.0f}{m.best_s:>10.2f}"
            f"{throughput[m.name, m.dataset] / 1e6:>16.1f}{peak_text:>15}{n_events:>10}"
            f"{recall:>22}{precision:>22}"
        )
        if m.name == "spikelab" and found < RECALL_FLOOR * detectable:
            raise SystemExit(
                f"spikelab found only {found} of {detectable} injected spikes >= "
                f"{DETECTABLE_SNR:g} sd on {m.dataset}: detection is broken"
            )
    print(
        f"(recall: injected spikes >= {DETECTABLE_SNR:g} noise sd with an event within "
        f"+-{MATCH_TOLERANCE_S * 1e3:g} ms on their channel; precision: events within "
        f"+-{MATCH_TOLERANCE_S * 1e3:g} ms of an injected spike on their channel)"
    )

    peak_mb = {(m.name, m.dataset): m.peak_rss_mb for m in results}
    speed = throughput["spikelab", FULL] / throughput["SpikeInterface", FULL]
    speed_ok = speed >= THROUGHPUT_GOAL
    print(
        f"\nspikelab throughput / SpikeInterface = {speed:.2f}x on {shapes[FULL][1] / fs:g} s "
        f"(goal >= {THROUGHPUT_GOAL:g}x: {'met' if speed_ok else 'MISSED'})"
    )
    long_mb, short_mb = peak_mb["spikelab", FULL], peak_mb["spikelab", SHORT]
    if long_mb is None or short_mb is None:
        print("peak RSS not measurable here (no /proc/self/clear_refs): memory goal not checked")
        return speed_ok
    memory = long_mb / short_mb
    memory_ok = memory <= MEMORY_GOAL
    print(
        f"spikelab peak RSS {shapes[FULL][1] / fs:g} s / {SHORT_SECONDS:g} s = {memory:.2f}x "
        f"(goal <= {MEMORY_GOAL:g}x: {'met' if memory_ok else 'MISSED'})"
    )
    si_long, si_short = peak_mb["SpikeInterface", FULL], peak_mb["SpikeInterface", SHORT]
    if si_long is not None and si_short is not None:
        print(f"SpikeInterface peak RSS ratio, for context: {si_long / si_short:.2f}x")
    return speed_ok and memory_ok


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--channels", type=int, default=64, help="number of channels")
    parser.add_argument("--fs", type=float, default=20_000.0, help="sampling rate (Hz)")
    parser.add_argument("--seconds", type=float, default=300.0, help="duration of the traces")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per method")
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one untimed call before the timed ones",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="HDF5 file to build or reuse (default: one in the temp directory)",
    )
    args = parser.parse_args()
    if args.channels < 2 * SPREAD_CHANNELS + 1 or args.repeats < 1:
        parser.error(f"need --channels >= {2 * SPREAD_CHANNELS + 1} and --repeats >= 1")
    if args.seconds <= SHORT_SECONDS:
        parser.error(f"need --seconds > {SHORT_SECONDS:g}")
    if 0.95 * args.fs / 2 < HIGHCUT_HZ:
        parser.error(f"need --fs >= {HIGHCUT_HZ / 0.475:.0f} (spikelab clips higher cuts)")
    return args


def main() -> int:
    """Build or reuse the file, measure each method on both datasets in fresh processes."""
    args = parse_args()
    meta = {"channels": args.channels, "fs": args.fs, "seconds": args.seconds, "seed": SEED}
    path = args.file or Path(tempfile.gettempdir()) / (
        f"spikelab_bench_detect_{args.channels}ch_{args.fs:g}Hz_{args.seconds:g}s.h5"
    )
    ensure_file(path, meta)
    warm_page_cache(path)
    shapes = {dataset: dataset_shape(path, dataset) for dataset in (FULL, SHORT)}
    truths = {dataset: read_ground_truth(path, shapes[dataset][1]) for dataset in (FULL, SHORT)}
    print(
        f"numpy {np.__version__}, h5py {h5py.__version__}, spikeinterface "
        f"{spikeinterface.__version__}, {os.cpu_count()} CPUs; "
        f"{'1 warm-up + ' if args.warmup else ''}best of {args.repeats}, "
        "each method in a fresh process"
    )

    results: list[Measurement] = []
    for dataset in (FULL, SHORT):
        for name in METHODS:
            result = in_fresh_process(
                measure, name, path, dataset, args.fs, args.repeats, args.warmup
            )
            results.append(result)
            print(f"  {name} on {dataset}: {result.best_s:.2f} s", flush=True)
    return 0 if report(results, truths, shapes, args.fs) else 1


if __name__ == "__main__":
    sys.exit(main())
