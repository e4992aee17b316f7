"""Builders for the IBL tests: a real on-disk ONE cache of ALF files and Brain-Wide Map tables.

Two sessions with two probes each. Session 0 keeps its trials as one file per attribute,
session 1 as ONE's trials table; probe ``s1/probe01`` is sorted into ``alf/probe01`` (no
``pykilosort`` folder). The insertions table also lists ``s1/probe02``, which has no ALF
files. All spike and trial times are binary fractions, so seconds -> ms is exact.
"""

from __future__ import annotations

import datetime
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

LAB = "cortexlab"
PROBE_MODEL = "3B2"
N_CHANNELS = 8
SESSIONS = {  # key: (subject, date, number, trials layout)
    "s0": ("KS001", "2024-03-04", 1, "files"),
    "s1": ("KS002", "2024-03-05", 2, "table"),
}
PIDS = {
    ("s0", "probe00"): "00000000-0000-4000-8000-000000000a00",
    ("s0", "probe01"): "00000000-0000-4000-8000-000000000a01",
    ("s1", "probe00"): "00000000-0000-4000-8000-000000000b00",
    ("s1", "probe01"): "00000000-0000-4000-8000-000000000b01",
    ("s1", "probe02"): "00000000-0000-4000-8000-000000000b02",  # no ALF files
}
COLLECTIONS = {
    ("s0", "probe00"): "alf/probe00/pykilosort",
    ("s0", "probe01"): "alf/probe01/pykilosort",
    ("s1", "probe00"): "alf/probe00/pykilosort",
    ("s1", "probe01"): "alf/probe01",
}
INSERTION_JSON = {"x": -2243.0, "y": -2000.0, "z": 0.0, "theta": 15.0, "phi": 180.0}

# Primary probe s0/probe00: 6 clusters; 1 and 3 fail QC, 5 is good but never fires.
PRIMARY_TIMES_S = [0.125, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]
PRIMARY_CLUSTERS = [2, 0, 1, 2, 3, 0, 4, 2, 1, 0]
PRIMARY_LABELS = [1.0, 1 / 3, 1.0, 2 / 3, 1.0, 1.0]

# Good clusters of each probe in the Brain-Wide Map table: (cluster id, Allen acronym, id).
GOOD_UNITS = {
    ("s0", "probe00"): [(0, "MOs5", 767), (2, "MOs2/3", 962), (4, "MOp5", 648), (5, "CA1", 382)],
    ("s0", "probe01"): [(0, "CA1", 382), (1, "CA1sp", 407), (2, "CA1", 382)],
    ("s1", "probe00"): [(0, "MOs", 993)] + [(c, "VISp4", 721) for c in range(1, 6)],
    ("s1", "probe01"): [(0, "MOp", 985), (1, "MOp5", 648), (2, "MOp", 985)],
}
BERYL = {"MOs5": "MOs", "MOs2/3": "MOs", "MOs": "MOs", "MOp5": "MOp", "MOp": "MOp"}
BERYL |= {"CA1": "CA1", "CA1sp": "CA1", "VISp4": "VISp"}
COSMOS = {"MOs": "Isocortex", "MOp": "Isocortex", "VISp": "Isocortex", "CA1": "HPF"}


@dataclass
class IblCache:
    """What a test needs to know about a built cache."""

    root: Path
    one: Any
    eids: dict[str, str] = field(default_factory=dict)
    session_paths: dict[str, Path] = field(default_factory=dict)

    def pid(self, session: str, probe: str) -> str:
        return PIDS[(session, probe)]


def build_ibl_cache(root: Path, *, insertions: bool = True) -> IblCache:
    """Write the ALF files and ONE's cache tables under ``root``; open it with ONE locally."""
    from iblutil.io import parquet
    from one.alf.cache import make_parquet_db
    from one.api import ONE

    paths = {}
    for key, (subject, day, number, layout) in SESSIONS.items():
        session = root / LAB / "Subjects" / subject / day / f"{number:03d}"
        paths[key] = session
        write_trials(session / "alf", key, layout)
        for (owner, probe), collection in COLLECTIONS.items():
            if owner == key:
                write_probe(session / collection, owner, probe)
    make_parquet_db(root, hash_files=False)
    # Without file hashes ONE reports every file as changed; without default_revision it
    # warns. Give the datasets table what an Alyx-made cache has.
    datasets, meta = parquet.load(root / "datasets.pqt")
    datasets["hash"] = None
    datasets["default_revision"] = True
    parquet.save(root / "datasets.pqt", datasets, meta)
    ONE.cache_clear()  # ONE() is memoised by its arguments
    one = ONE(mode="local", cache_dir=root)
    eids = {key: str(one.path2eid(path)) for key, path in paths.items()}
    if insertions:
        write_insertions_table(root, eids)
        one.load_cache()
    return IblCache(root, one, eids, paths)


def write_insertions_table(root: Path, eids: dict[str, str]) -> None:
    """Save ``insertions.pqt`` the way ONE saves the records it fetched from Alyx."""
    from iblutil.io import parquet

    rows = [
        {
            "eid": eids[session],
            "id": pid,
            "name": probe,
            "model": PROBE_MODEL,
            "json": json.dumps(INSERTION_JSON),
        }
        for (session, probe), pid in PIDS.items()
    ]
    table = pd.DataFrame(rows).set_index(["eid", "id"]).sort_index()
    created = datetime.datetime(2024, 6, 1).isoformat(sep=" ", timespec="minutes")
    parquet.save(root / "insertions.pqt", table, {"date_created": created, "origin": "test"})


def probe_spikes(session: str, probe: str) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Spike times (s), spike clusters and cluster labels of one probe."""
    if (session, probe) == ("s0", "probe00"):
        return np.array(PRIMARY_TIMES_S), np.array(PRIMARY_CLUSTERS), PRIMARY_LABELS
    n_clusters = len(GOOD_UNITS[(session, probe)])
    clusters = np.repeat(np.arange(n_clusters), 2)  # two spikes per cluster
    times = 0.25 * (np.arange(clusters.size) + 1) + (0.5 if session == "s1" else 0.0)
    return times, clusters, [1.0] * n_clusters


def write_probe(folder: Path, session: str, probe: str) -> None:
    """Write the spikes, clusters and channels objects of one probe."""
    folder.mkdir(parents=True)
    times, clusters, labels = probe_spikes(session, probe)
    np.save(folder / "spikes.times.npy", times)
    np.save(folder / "spikes.clusters.npy", clusters.astype(np.uint32))
    np.save(folder / "spikes.amps.npy", np.full(times.size, 5e-5))
    ids = np.arange(len(labels))
    np.save(folder / "clusters.channels.npy", (ids + 2) % N_CHANNELS)
    pd.DataFrame({"cluster_id": ids, "label": labels}).to_parquet(folder / "clusters.metrics.pqt")
    pd.DataFrame({"uuids": [cluster_uuid(session, probe, i) for i in ids]}).to_csv(
        folder / "clusters.uuids.csv", index=False
    )
    channels = np.arange(N_CHANNELS)
    np.save(folder / "channels.brainLocationIds_ccf_2017.npy", np.where(channels < 4, 767, 382))
    np.save(
        folder / "channels.mlapdv.npy",
        np.column_stack([np.full(N_CHANNELS, -1500), 1250 + 0 * channels, -250 * channels]),
    )
    np.save(
        folder / "channels.localCoordinates.npy",
        np.column_stack([np.tile([43.0, 11.0], N_CHANNELS // 2), 20.0 * (channels // 2)]),
    )
    np.save(folder / "channels.rawInd.npy", channels + 100)


def cluster_uuid(session: str, probe: str, cluster: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{session}/{probe}/{cluster}"))


TRIALS = {
    "intervals_0": [0.0, 4.0, 8.0],
    "intervals_1": [3.5, 7.5, 11.5],
    "stimOn_times": [0.5, 4.5, 8.5],
    "stimOff_times": [3.0, 7.0, 11.0],
    "goCue_times": [0.5, 4.5, 8.5],
    "response_times": [1.25, 5.0, 9.75],
    "feedback_times": [1.25, 5.0, 9.75],
    "firstMovement_times": [1.0, 4.75, np.nan],
    "choice": [-1.0, 1.0, 0.0],
    "feedbackType": [1.0, -1.0, -1.0],
    "contrastLeft": [1.0, np.nan, 0.0625],
    "contrastRight": [np.nan, 0.25, np.nan],
    "probabilityLeft": [0.5, 0.8, 0.2],
}


def write_trials(alf: Path, session: str, layout: str) -> None:
    """Write the trials object, one file per attribute or as ONE's trials table."""
    alf.mkdir(parents=True)
    offset = 0.0 if session == "s0" else 100.0
    columns = {
        name: np.array(values) + (offset if "times" in name or "intervals" in name else 0)
        for name, values in TRIALS.items()
    }
    if layout == "table":
        pd.DataFrame(columns).to_parquet(alf / "_ibl_trials.table.pqt")
        return
    np.save(
        alf / "_ibl_trials.intervals.npy",
        np.column_stack([columns.pop("intervals_0"), columns.pop("intervals_1")]),
    )
    for name, values in columns.items():
        np.save(alf / f"_ibl_trials.{name}.npy", values)


def units_table(eids: dict[str, str]) -> pd.DataFrame:
    """The Brain-Wide Map units table of the four sorted probes, as ``bwm_units`` returns it."""
    rows = []
    for (session, probe), units in GOOD_UNITS.items():
        for cluster, acronym, atlas_id in units:
            rows.append(
                {
                    "eid": eids[session],
                    "pid": PIDS[(session, probe)],
                    "cluster_id": cluster,
                    "uuids": cluster_uuid(session, probe, cluster),
                    "label": 1.0,
                    "atlas_id": atlas_id,
                    "acronym": acronym,
                    "x": -0.0015,
                    "y": 0.00125 + 0.0001 * cluster,
                    "z": -0.00025 * cluster,
                    "axial_um": 20.0 * cluster,
                    "lateral_um": 43.0,
                    "firing_rate": 2.5 + cluster,
                    "presence_ratio": 0.96875,
                    "amp_median": 6.25e-5,
                    "contamination": 0.0,
                    "drift": 1.5,
                    "noise_cutoff": 0.5,
                    "spike_count": 2 + cluster,
                    "Beryl": BERYL[acronym],
                    "Cosmos": COSMOS[BERYL[acronym]],
                }
            )
    return pd.DataFrame(rows)


def aggregate_clusters_table() -> pd.DataFrame:
    """A small published-style ``clusters.pqt``: no Beryl/Cosmos, every label, every region.

    After the Brain-Wide Map filters only MOs units remain: 6 of session A (two layers of
    MOs) and 5 of session B. CA1 has 5 units in A but 4 in B (one session only); VISp has 5
    in C and 3 in B. Label < 1, root, void, unknown and missing atlas ids all go.
    """
    groups = [  # (eid, pid, atlas id, label, count)
        ("eid-a", "pid-a", 767, 1.0, 4),
        ("eid-a", "pid-a", 962, 1.0, 2),
        ("eid-a", "pid-a", 993, 2 / 3, 3),
        ("eid-a", "pid-a", 382, 1.0, 5),
        ("eid-a", "pid-a", 997, 1.0, 6),
        ("eid-a", "pid-a", 0, 1.0, 6),
        ("eid-a", "pid-a", 123456789, 1.0, 6),
        ("eid-a", "pid-a", np.nan, 1.0, 6),
        ("eid-b", "pid-b1", 993, 1.0, 3),
        ("eid-b", "pid-b2", 993, 1.0, 2),
        ("eid-b", "pid-b1", 407, 1.0, 4),
        ("eid-b", "pid-b2", 385, 1.0, 3),
        ("eid-c", "pid-c", 721, 1.0, 5),
    ]
    rows = []
    for eid, pid, atlas_id, label, count in groups:
        for _ in range(count):
            rows.append({"eid": eid, "pid": pid, "atlas_id": atlas_id, "label": label})
    table = pd.DataFrame(rows)
    table["cluster_id"] = table.groupby("pid").cumcount()
    table["acronym"] = "n/a"
    table["firing_rate"] = 1.0
    return table
