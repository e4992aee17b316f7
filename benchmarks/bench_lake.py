"""Benchmark ``spikelab lake units --region`` on a lake of 1 M units against pandas.

Run ``python benchmarks/bench_lake.py [--units 1000000] [--files 100] [--repeats 3]``.

A synthetic lake is written once (reused later) with ``write_units_table``: ``--files``
units tables of equal size from three sources, each unit with a few spikes and a region
among 8 acronyms, plus per-source attribute columns, so the files' schemas differ as in a
real lake. Then, in the same run, the same question — the units in CA1 — is answered:

``spikelab``
    :func:`spikelab.lake_queries.find_units` (DuckDB over the Hive-partitioned lake with
    ``union_by_name``), in process, best of ``--repeats``.
``spikelab CLI``
    The whole ``spikelab lake units --region CA1 --format csv`` command in a fresh process
    (interpreter start and imports included), best of ``--repeats``: the goal (< 1 s).
``pandas``
    ``pd.read_parquet`` of every file, concatenated, then a boolean filter.

Both answers must hold the same units. The headline: pandas time / spikelab time, and the
CLI's wall time against the 1 s goal.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from spikelab.io.lake import Lake
from spikelab.io.units_table import write_units_table
from spikelab.lake_queries import find_units
from spikelab.spikedata import SpikeData

REGIONS = np.array(["CA1", "CA3", "DG", "MOs", "MOp", "VISp", "LP", "PO"])
SOURCES = ("dandi", "ibl", "files")
GOAL_SECONDS = 1.0


def build_lake(root: Path, n_units: int, n_files: int) -> None:
    """Write ``n_files`` units tables holding ``n_units`` units in all."""
    rng = np.random.default_rng(0)
    lake = Lake(root)
    per_file = n_units // n_files
    for index in range(n_files):
        source = SOURCES[index % len(SOURCES)]
        spikes = [np.sort(rng.uniform(0, 60_000, 4)) for _ in range(per_file)]
        regions = rng.choice(REGIONS, size=per_file)
        extra = {"dandi": "snr", "ibl": "presence_ratio", "files": "amplitude"}[source]
        attributes = [
            {"unit_id": unit, "location_label": str(region), extra: float(value)}
            for unit, (region, value) in enumerate(
                zip(regions, rng.uniform(0, 1, per_file), strict=False)
            )
        ]
        sd = SpikeData(spikes, length=60_000.0, neuron_attributes=attributes)
        dataset = f"set{index // 10:03d}"
        write_units_table(
            sd,
            lake.units_path(source, dataset, f"asset{index:04d}"),
            source=source,
            dataset_id=dataset,
            asset_id=f"asset{index:04d}",
        )


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def pandas_query(root: Path) -> pd.DataFrame:
    """The reference: read every file with pandas, concatenate, filter."""
    files = sorted((root / "units").rglob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame[frame["location_label"] == "CA1"]


def main() -> int:
    """Build or reuse the lake, time the three ways, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.gettempdir()) / f"spikelab_bench_lake_{args.units}_{args.files}"
    if not (root / "units").is_dir():
        print(f"building {root} ...", flush=True)
        build_lake(root, args.units, args.files)

    spikelab_s, found = best_of(args.repeats, lambda: find_units(root, regions=["CA1"]))
    command = [
        sys.executable,
        "-m",
        "spikelab.cli",
        "lake",
        "units",
        "--region",
        "CA1",
        "--format",
        "csv",
        "--lake",
        str(root),
    ]
    cli_s, _ = best_of(
        args.repeats, lambda: subprocess.run(command, check=True, capture_output=True)
    )
    pandas_s, expected = best_of(args.repeats, lambda: pandas_query(root))
    assert isinstance(found, pd.DataFrame) and isinstance(expected, pd.DataFrame)
    if len(found) != len(expected):
        raise SystemExit(f"spikelab found {len(found)} units, pandas {len(expected)}")
    print(f"{len(found):,} CA1 units of {args.units:,} in {args.files} files")
    print(f"{'method':<16}{'best (s)':>10}")
    for name, seconds in (("spikelab", spikelab_s), ("spikelab CLI", cli_s), ("pandas", pandas_s)):
        print(f"{name:<16}{seconds:>10.3f}")
    print(f"\nspikelab is {pandas_s / spikelab_s:.1f}x faster than pandas read_parquet + filter")
    met = cli_s < GOAL_SECONDS
    print(
        f"the whole CLI command takes {cli_s:.2f} s (goal < {GOAL_SECONDS:g} s: "
        f"{'met' if met else 'MISSED'})"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
