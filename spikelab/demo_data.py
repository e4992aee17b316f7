"""A small but realistic synthetic dataset: one NWB file, one KiloSort folder, one HDF5 file.

Used by ``spikelab demo`` (which keeps one copy, see :func:`kept_demo_dataset`) and by
the tests. Spike trains are Poisson with refractory
periods and lognormal rates; the NWB file has a probe with two shanks in CA1 and DG.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from spikelab.io.nwb import export_spikedata_to_nwb
from spikelab.spikedata import SpikeData

FS_HZ = 30_000.0
DURATION_S = 60.0
REGIONS = ("CA1", "DG")
DEMO_INPUTS = ("session.nwb", "kilosort", "spikes.h5")


def poisson_trains(rng: np.random.Generator, n_units: int, duration_s: float) -> list[np.ndarray]:
    """Spike times (s) of ``n_units`` Poisson units with a 2 ms refractory period."""
    trains = []
    for rate in rng.lognormal(mean=1.5, sigma=0.8, size=n_units).clip(0.5, 40.0):
        intervals = rng.exponential(1.0 / rate, size=int(rate * duration_s * 1.5) + 10) + 0.002
        times = np.cumsum(intervals)
        trains.append(times[times < duration_s])
    return trains


def write_nwb(path: Path, rng: np.random.Generator) -> Path:
    """An NWB file with electrodes on two shanks (CA1, DG) and 24 sorted units."""
    trains = poisson_trains(rng, 24, DURATION_S)
    attributes = []
    for index in range(len(trains)):
        shank = index % 2
        channel = index
        attributes.append(
            {
                "unit_id": index,
                "electrode": channel,
                "location": [250.0 * shank, 20.0 * (channel // 2), 0.0],
                "location_label": REGIONS[shank],
                "group_name": f"shank{shank}",
                "quality": "good" if index % 3 else "mua",
                "snr": float(np.round(rng.uniform(2.0, 12.0), 2)),
            }
        )
    sd = SpikeData(
        [t * 1000.0 for t in trains],
        length=DURATION_S * 1000.0,
        neuron_attributes=attributes,
        metadata={
            "identifier": "spikelab-demo-session",
            "session_description": "synthetic hippocampal recording for the spikelab demo",
            "session_start_time": datetime(2024, 3, 1, 10, 0, tzinfo=UTC).isoformat(),
            "subject_id": "demo-mouse-1",
            "species": "Mus musculus",
            "sex": "F",
            "age": "P90D",
            "device_names": ["probe-a"],
            "sampling_rate_hz": FS_HZ,
        },
    )
    return export_spikedata_to_nwb(sd, path)


def write_kilosort(folder: Path, rng: np.random.Generator) -> Path:
    """A KiloSort/Phy folder: 16 clusters (two labelled noise), TSV labels, params.py."""
    folder.mkdir(parents=True, exist_ok=True)
    trains = poisson_trains(rng, 16, DURATION_S)
    samples = np.concatenate([np.round(t * FS_HZ).astype(np.uint64) for t in trains])
    clusters = np.concatenate([np.full(t.size, i, dtype=np.int32) for i, t in enumerate(trains)])
    order = np.argsort(samples, kind="stable")
    np.save(folder / "spike_times.npy", samples[order])
    np.save(folder / "spike_clusters.npy", clusters[order])
    np.save(folder / "channel_map.npy", np.arange(32, dtype=np.int32))
    positions = np.column_stack([np.tile([0.0, 32.0], 16), np.repeat(np.arange(16) * 20.0, 2)])
    np.save(folder / "channel_positions.npy", positions)
    labels = ["noise" if i in (3, 11) else ("good" if i % 2 else "mua") for i in range(16)]
    (folder / "cluster_group.tsv").write_text(
        "cluster_id\tgroup\n" + "".join(f"{i}\t{g}\n" for i, g in enumerate(labels))
    )
    (folder / "cluster_info.tsv").write_text(
        "cluster_id\tch\tAmplitude\tgroup\n"
        + "".join(f"{i}\t{2 * i}\t{rng.uniform(40, 120):.1f}\t{g}\n" for i, g in enumerate(labels))
    )
    (folder / "params.py").write_text(
        "dat_path = 'recording.bin'\nn_channels_dat = 32\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {FS_HZ}\nhp_filtered = True\n"
    )
    return folder


def write_hdf5(path: Path, rng: np.random.Generator) -> Path:
    """An HDF5 file in the ragged layout: ``spike_times`` (s) + ``spike_times_index``."""
    trains = poisson_trains(rng, 12, DURATION_S)
    with h5py.File(path, "w") as handle:
        handle["spike_times"] = np.concatenate(trains)
        handle["spike_times_index"] = np.cumsum([t.size for t in trains])
        handle.attrs["time_unit"] = "s"
        handle.attrs["length_ms"] = DURATION_S * 1000.0
    return path


def write_demo_dataset(folder: str | Path, seed: int = 7) -> list[Path]:
    """Write the three demo inputs into ``folder``; return their paths."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    nwb, kilosort, hdf5 = (root / name for name in DEMO_INPUTS)
    return [write_nwb(nwb, rng), write_kilosort(kilosort, rng), write_hdf5(hdf5, rng)]


def kept_demo_dataset(folder: str | Path) -> list[Path]:
    """The three demo inputs in ``folder``, written there only when one is missing.

    Later demos find the same files, so they skip what the lake already holds rather than
    adding the dataset again under new keys. The files are written into a temporary folder
    beside ``folder`` and renamed into place: a killed demo leaves no half-written dataset.
    Delete ``folder`` to have the dataset written afresh.
    """
    root = Path(folder)
    inputs = [root / name for name in DEMO_INPUTS]
    if all(path.exists() for path in inputs):
        return inputs
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    write_demo_dataset(staging)
    try:
        staging.rename(root)
    except OSError:  # a folder is there: another demo's whole copy, or an incomplete one
        if all(path.exists() for path in inputs):
            shutil.rmtree(staging)
        else:
            shutil.rmtree(root, ignore_errors=True)
            staging.rename(root)
    return inputs
