"""Benchmark the Delta Lake lake at archive scale against today's Hive layout and pandas.

Run ``python benchmarks/bench_lake.py [--quick] [--s3]``; ``--help`` lists the sizes.

A synthetic archive of ``--units`` units in ``--assets`` assets (three sources, each with an
attribute column of its own, so schemas differ as in a real lake; every unit has
``--spikes`` spike times and one of 8 region labels) is built by the real publishing path:
``units_arrow_table`` then :func:`spikelab.io.delta_lake.publish`, ``--per-commit`` assets
per commit. The same assets are also written in today's Hive layout (one Parquet file each,
``write_units_table``). Then, in one run:

region query
    The exact label ``location_label = 'CA1'`` (``--region-label CA1``) through
    ``spikelab.lake_queries.units_sql`` on a DuckDB connection from
    :func:`spikelab.io.delta_read.connect`, in process (best of ``--repeats``), before and
    after :func:`spikelab.io.delta_upkeep.compact`; against the query spikelab ran on the Hive
    layout (DuckDB ``read_parquet`` with ``union_by_name``), pandas over the Hive files, and
    pandas over the Delta table (``to_pandas``). Then the hierarchy: ``--region HPF`` (the
    hippocampal formation's subtree, over labels spelled as labs spell them), in process and
    as the whole ``spikelab lake units --region HPF --format csv`` command (a fresh process:
    interpreter start, imports, query, CSV out), beside the exact-label command.
remap and mapping
    ``spikelab lake remap`` of the whole lake (one commit), and the cost of mapping one
    distinct label (a fresh mapper per label set, so nothing is cached).
spike trains
    The same query also returning ``spike_times_ms``: the part the region query skips.
skip check
    :func:`spikelab.io.delta_lake.assets_index` over every asset.
commit overhead
    Both tables taken to ``--versions`` versions by one-row commits (delta-rs writes a
    checkpoint every 100), then publishing one asset (3 commits), median of 5, probed
    at 1,000, 5,000, 10,000 and 20,000 versions: with a ``LakeWriter`` kept open (as a flow
    run's publisher keeps it; the goal) and with a one-off ``publish``, against delta-rs's own
    ``write_deltalake`` of one asset with its default post-commit hooks (whose expired-log
    cleanup lists the whole ``_delta_log`` after each commit). Every version is younger than
    the log retention (a week), so all its log files stay: the worst case. Then again at the
    last probe after the nightly compaction of a table whose versions came over weeks (all
    but the newest ``--recent-versions`` made 8 days old): its log files past the retention
    are removed, as they are on a lake that ``lake compact`` looks after.
S3 (``--s3``)
    ``--s3-assets`` assets published to moto's S3 server (a separate process on
    127.0.0.1), compacted, then the region query.

Every answer is checked against the Hive lake's. Exit status 1 if a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spikelab.io.delta_lake import (
    LakeWriter,
    Publication,
    assets_index,
    assets_uri,
    open_table,
    publish,
    publish_hooks,
    units_uri,
)
from spikelab.io.delta_read import connect, history
from spikelab.io.delta_upkeep import compact
from spikelab.io.lake import Lake
from spikelab.io.lake_remap import remap
from spikelab.io.units_table import units_arrow_table, write_units_table
from spikelab.lake_queries import find_units, units_sql
from spikelab.spikedata import SpikeData

# Region labels as labs write them: several spellings of hippocampal structures among others.
REGIONS = np.array(["CA1", "ca1", "CA1sp", "dorsal CA3", "DG", "MOs", "MOp", "VISp5", "LP", "PO"])
HPF_LABELS = {"CA1", "ca1", "CA1sp", "dorsal CA3", "DG"}
SOURCES = ("dandi", "ibl", "files")
EXTRA = {"dandi": "snr", "ibl": "presence_ratio", "files": "amplitude"}
GOALS = {
    "query": 1.0,
    "cli": 1.5,
    "s3": 2.0,
    "skip": 2.0,
    "commit": 0.150,
    "remap": 60.0,
    "label_ms": 1.0,
}
FULL = {"units": 1_000_000, "assets": 20_000, "versions": 20_000, "s3_assets": 2_000}
QUICK = {"units": 50_000, "assets": 1_000, "versions": 1_000, "s3_assets": 200}


def synthetic_assets(
    n_units: int, n_assets: int, spikes: int
) -> Iterator[tuple[SpikeData, Publication]]:
    """The archive's assets: each one's SpikeData and its publication."""
    rng = np.random.default_rng(0)
    per_asset = n_units // n_assets
    for index in range(n_assets):
        source = SOURCES[index % len(SOURCES)]
        dataset, asset = f"set{index // 100:04d}", f"asset{index:06d}"
        times = np.sort(rng.uniform(0, 60_000, (per_asset, spikes)), axis=1).ravel()
        regions = rng.choice(REGIONS, size=per_asset)
        values = rng.uniform(0, 1, per_asset)
        attributes = [
            {"unit_id": unit, "location_label": str(region), EXTRA[source]: float(value)}
            for unit, (region, value) in enumerate(zip(regions, values, strict=True))
        ]
        sd = SpikeData.from_flat(
            times, np.arange(1, per_asset + 1) * spikes, length=60_000.0,
            neuron_attributes=attributes,
        )  # fmt: skip
        units = units_arrow_table(sd, source=source, dataset_id=dataset, asset_id=asset)
        manifest = {"status": "ok", "input": {"content_id": f"c-{asset}"}}
        yield sd, Publication((source, dataset, asset), units, manifest)


def build(root: str, hive: Path | None, args: argparse.Namespace, n_assets: int) -> float:
    """Publish the archive (batched) and, when ``hive`` is given, write its Hive copy.

    Returns the seconds spent in :func:`publish`.
    """
    old = Lake(hive) if hive is not None else None
    spent, batch = 0.0, []
    for sd, entry in synthetic_assets(args.units * n_assets // args.assets, n_assets, args.spikes):
        if old is not None:
            source, dataset, asset = entry.key
            path = old.units_path(source, dataset, asset)
            write_units_table(sd, path, source=source, dataset_id=dataset, asset_id=asset)
        batch.append(entry)
        if len(batch) == args.per_commit:
            spent += timed_publish(root, batch)
            batch = []
    return spent + (timed_publish(root, batch) if batch else 0.0)


def timed_publish(root: str, batch: list[Publication]) -> float:
    start = time.perf_counter()
    publish(root, batch, flow_run_id="bench")
    return time.perf_counter() - start


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of ``repeats`` calls and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def delta_query(
    root: str, as_of: int | None = None, with_spike_times: bool = False
) -> pd.DataFrame:
    """The exact-label query on the Delta lake, through ``find_units`` (a DataFrame)."""
    return find_units(root, region_labels=["CA1"], with_spike_times=with_spike_times, as_of=as_of)


def subtree_query(root: str) -> pd.DataFrame:
    """The hippocampal formation and every structure below it, through ``find_units``."""
    return find_units(root, regions=["HPF"])


def label_cost_ms() -> float:
    """Milliseconds to map one distinct label with a new mapper (no cache), median of 5."""
    from spikelab.brain_regions import AliasTable, RegionMapper
    from spikelab.io.brain_columns import ontology

    labels = [f"{label} {i}" for i in range(20) for label in REGIONS] + list(REGIONS)
    tree, aliases = ontology(), AliasTable.load()
    times = []
    for _ in range(5):
        mapper = RegionMapper(tree, aliases)
        start = time.perf_counter()
        mapper.map_labels(labels, "Mus musculus")
        times.append((time.perf_counter() - start) * 1000 / len(set(labels)))
    return statistics.median(times)


def pandas_hive(hive: Path) -> pd.DataFrame:
    """pandas over today's layout: read every file, concatenate, filter."""
    files = sorted((hive / "units").rglob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame[frame["location_label"] == "CA1"]


def pandas_delta(root: str) -> pd.DataFrame:
    """pandas over the Delta table, as its users would write it."""
    from deltalake import DeltaTable

    frame = DeltaTable(units_uri(root)).to_pandas()
    return frame[frame["location_label"] == "CA1"]


def cli_command(
    root: str,
    env: dict[str, str] | None = None,
    region: tuple[str, str] = ("--region-label", "CA1"),
) -> None:
    """The whole ``spikelab lake units <region> --format csv`` command, output dropped."""
    command = [sys.executable, "-m", "spikelab.cli", "lake", "units", *region]
    command += ["--format", "csv", "--lake", root]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)


def by_delta_labels(root: str) -> pd.Series:
    """Every published unit's raw label (to check the subtree query's count)."""
    connection = connect(root)
    return connection.execute("SELECT location_label FROM units").df()["location_label"]


def hive_query(hive: Path) -> pd.DataFrame:
    """The region query as spikelab ran it on the Hive layout before the Delta tables.

    DuckDB over every file, with Hive partitions and ``union_by_name`` (each file's footer
    is read to unite the schemas), then the same SELECT as the CLI's.
    """
    import duckdb

    connection = duckdb.connect()
    pattern = str(hive / "units" / "**" / "*.parquet").replace("'", "''")
    connection.execute(
        "CREATE VIEW units AS SELECT * FROM read_parquet("
        f"'{pattern}', hive_partitioning=true, union_by_name=true, "
        "hive_types={'source': VARCHAR, 'dataset': VARCHAR})"
    )
    connection.execute("CREATE VIEW sessions AS SELECT NULL AS species WHERE false")
    return connection.execute(units_sql(connection, region_labels=["CA1"])).df()


def _one_unit(asset_id: str) -> Publication:
    sd = SpikeData([[1.0, 2.0]], length=10.0)
    units = units_arrow_table(sd, source="files", dataset_id="d", asset_id=asset_id)
    return Publication(("files", "d", asset_id), units, {"status": "ok"})


def commit_overhead(
    root: Path, versions: int, recent: int
) -> dict[str, tuple[float, float, float]]:
    """Take both tables to ``versions`` versions; time publishing one asset on the way.

    Each publication commits to the units and the assets table, so both are grown: one
    asset replaced over and over (as re-ingests do), so each log grows (a checkpoint every
    100 versions, holding the replaced files' tombstones) while each table keeps one live
    file. At the last probe the timing is done twice: with every log file kept (all
    versions younger than the log retention), then after the nightly housekeeping of a
    table whose versions accumulated over weeks: every log file but the newest ``recent``
    versions' is made 8 days old and :func:`compact` runs. Returns, per probe, the figures
    of :func:`_publishing_times`.
    """
    from deltalake import write_deltalake

    _, first = next(synthetic_assets(1, 1, 4))
    publish(root, [first])
    grown = []  # (table object brought forward by its own writes, the row it rewrites)
    for uri in (units_uri(root), assets_uri(root)):
        table = open_table(uri)
        if table is None:
            raise SystemExit(f"{uri}: the first publish made no table")
        grown.append((table, table.to_pyarrow_table()))
    probes = sorted({p for p in (1_000, 5_000, 10_000, 20_000, versions) if p <= versions})
    found: dict[str, tuple[float, float, float]] = {}
    for probe in probes:
        for table, rows in grown:
            while table.version() < probe:
                write_deltalake(
                    table,
                    rows,
                    mode="overwrite",
                    predicate="asset_id = 'asset000000'",
                    post_commithook_properties=publish_hooks(),
                )
        found[f"{probe:,} versions"] = _publishing_times(root, f"{probe:,} versions")
    for uri in (units_uri(root), assets_uri(root)):
        _age_log(Path(uri) / "_delta_log", recent, days=8)
    compact(root)
    left = len(list((Path(units_uri(root)) / "_delta_log").iterdir()))
    label = f"{versions:,} versions, after compaction ({left:,} units log files left)"
    found["housekept"] = _publishing_times(root, label)
    return found


def _age_log(log: Path, recent: int, days: float) -> None:
    """Make every log file but the newest ``recent`` versions' ``days`` old (its mtime)."""
    files = [path for path in log.iterdir() if path.name[:20].isdigit()]
    newest = max(int(path.name[:20]) for path in files)
    then = time.time() - days * 24 * 3600
    for path in files:
        if int(path.name[:20]) <= newest - recent:
            os.utime(path, (then, then))


def _publishing_times(root: Path, label: str) -> tuple[float, float, float]:
    """Median seconds (of 5) to publish a new one-unit asset, its 3 commits.

    With a :class:`LakeWriter` kept open as a flow run's publisher keeps it, with a one-off
    :func:`publish` (tables opened afresh), and, as the peer, the same asset's units
    written by ``write_deltalake`` with delta-rs's default post-commit hooks (one commit).
    """
    from deltalake import write_deltalake

    writer = LakeWriter(root)
    writer.publish([_one_unit(f"w-{label}")])  # opened, as after a run's first commit
    held, fresh, peer = [], [], []
    for index in range(5):
        name = f"x-{label}-{index}"
        start = time.perf_counter()
        writer.publish([_one_unit(f"w{name}")])
        held.append(time.perf_counter() - start)
        start = time.perf_counter()
        publish(root, [_one_unit(name)])
        fresh.append(time.perf_counter() - start)
        start = time.perf_counter()
        write_deltalake(
            open_table(units_uri(root)),
            _one_unit(f"p{name}").units,
            mode="overwrite",
            predicate=f"asset_id = 'p{name}'",
            schema_mode="merge",
        )
        peer.append(time.perf_counter() - start)
    held_s, fresh_s, peer_s = map(statistics.median, (held, fresh, peer))
    print(f"at {label}, one asset (three commits): LakeWriter of a run {held_s:.3f} s, "
          f"one-off publish() {fresh_s:.3f} s; write_deltalake with default hooks "
          f"{peer_s:.3f} s (one commit): {held_s / peer_s:.2f}x and {fresh_s / peer_s:.2f}x",
          flush=True)  # fmt: skip
    return held_s, fresh_s, peer_s


def start_moto() -> tuple[subprocess.Popen[str], str]:
    """moto's S3 server in its own process (so it never waits on this one's GIL)."""
    code = (
        "import time\nfrom moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "s.start()\nprint('%s:%s' % s.get_host_and_port(), flush=True)\ntime.sleep(86400)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    address = server.stdout.readline().strip() if server.stdout is not None else ""
    return server, f"http://{address}"


def s3_query(args: argparse.Namespace) -> dict[str, float]:
    """Publish ``--s3-assets`` assets to moto, compact, time the region query."""
    import boto3

    server, endpoint = start_moto()
    try:
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        os.environ.update(env)
        boto3.client("s3").create_bucket(Bucket="bench-lake")
        root = "s3://bench-lake/lake"
        publish_s = build(root, None, args, args.s3_assets)
        compact_s, _ = best_of(1, lambda: compact(root))
        query_s, found = best_of(args.repeats, lambda: delta_query(root))
        cli_s, _ = best_of(args.repeats, lambda: cli_command(root, {**os.environ, **env}))
        return {"publish": publish_s, "compact": compact_s, "query": query_s, "cli": cli_s,
                "found": len(found)}  # fmt: skip
    finally:
        server.kill()
        server.wait()


def main() -> int:
    """Build or reuse the lakes, time everything, print figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute or two)")
    parser.add_argument("--units", type=int)
    parser.add_argument("--assets", type=int)
    parser.add_argument("--versions", type=int)
    parser.add_argument("--s3-assets", type=int)
    parser.add_argument("--spikes", type=int, default=20, help="spike times per unit")
    parser.add_argument("--per-commit", type=int, default=100, help="assets per commit")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--s3", action="store_true", help="also the moto S3 query")
    parser.add_argument("--rebuild", action="store_true", help="do not reuse earlier lakes")
    parser.add_argument(
        "--recent-versions",
        type=int,
        default=1_000,
        help="versions younger than the log retention when the commit overhead is timed "
        "after compaction",
    )
    parser.add_argument(
        "--commits-only", action="store_true", help="only the commit overhead at --versions"
    )
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    base = Path(tempfile.gettempdir()) / f"spikelab_bench_delta_{args.units}_{args.assets}"
    if args.commits_only:
        return _commit_goal(base, args.versions, args.recent_versions)
    root, hive = base / "delta", base / "hive"
    if args.rebuild or not (base / "built").exists():
        shutil.rmtree(base, ignore_errors=True)
        start = time.perf_counter()
        publish_s = build(str(root), hive, args, args.assets)
        total = time.perf_counter() - start
        (base / "built").write_text(f"{publish_s} {total}")
    publish_s, total = map(float, (base / "built").read_text().split())
    commits = -(-args.assets // args.per_commit)
    print(f"{args.units:,} units in {args.assets:,} assets, {args.spikes} spikes per unit")
    print(f"build: {total:.0f} s in all, of which publish {publish_s:.0f} s for {commits} "
          f"commits of {args.per_commit} assets ({publish_s / commits:.2f} s per commit, "
          f"{args.assets / publish_s:.0f} assets/s)")  # fmt: skip
    figures: dict[str, float] = {}

    def note(name: str, measured: tuple[float, Any]) -> Any:
        figures[name] = measured[0]
        print(f"{name:<40}{measured[0]:>10.3f} s", flush=True)
        return measured[1]

    reps, where = args.repeats, str(root)
    expected = note("hive layout (DuckDB)", best_of(1, lambda: hive_query(hive)))
    by_pandas = note("pandas over the Hive files", best_of(1, lambda: pandas_hive(hive)))
    optimized = [h["version"] for h in history(where) if h["operation"] == "OPTIMIZE"]
    if optimized:  # built and compacted by an earlier run: read the version before it
        before = note(
            "delta before compaction (as of)",
            best_of(reps, lambda: delta_query(where, as_of=min(optimized) - 1)),
        )
    else:
        before = note("delta before compaction", best_of(reps, lambda: delta_query(where)))
        print(f"compaction: {note('compaction', best_of(1, lambda: compact(where)))}")
    _same(before, expected, "before compaction")
    found = note("delta after compaction", best_of(reps, lambda: delta_query(where)))
    _same(found, expected, "after compaction")
    note("  the same with spike_times_ms", best_of(reps, lambda: delta_query(where, None, True)))
    note("delta, whole CLI command", best_of(reps, lambda: cli_command(where)))
    hpf = note("region HPF (subtree), in process", best_of(reps, lambda: subtree_query(where)))
    note(
        "region HPF, whole CLI command",
        best_of(reps, lambda: cli_command(where, region=("--region", "HPF"))),
    )
    if len(hpf) != int(by_delta_labels(where).isin(HPF_LABELS).sum()):
        raise SystemExit(f"--region HPF found {len(hpf)} units, not every hippocampal label")
    per_label = label_cost_ms()
    print(f"{'mapping one distinct label':<40}{per_label:>10.3f} ms")
    remapped = note("lake remap, whole lake", best_of(1, lambda: remap(where)))
    if remapped["rows"] != args.units or remapped["changed"]:
        raise SystemExit(f"remap rewrote {remapped['rows']} rows, changed {remapped['changed']}")
    by_delta = note("pandas over the Delta table", best_of(1, lambda: pandas_delta(where)))
    if not len(expected) == len(by_pandas) == len(by_delta):
        raise SystemExit(f"answers differ: {len(expected)}, {len(by_pandas)}, {len(by_delta)}")
    index = note("skip check (assets_index)", best_of(reps, lambda: assets_index(where)))
    if len(index) != args.assets:
        raise SystemExit(f"the assets table holds {len(index)} assets, not {args.assets}")
    query = figures["delta after compaction"]
    print(f"\n{len(expected):,} CA1 units. After compaction the region query is "
          f"{figures['hive layout (DuckDB)'] / query:.0f}x faster than the Hive layout, "
          f"{figures['pandas over the Hive files'] / query:.0f}x faster than pandas over the "
          f"Hive files and {figures['pandas over the Delta table'] / query:.0f}x faster than "
          "pandas over the Delta table\n", flush=True)  # fmt: skip
    in_process = figures["region HPF (subtree), in process"] / query
    command = figures["region HPF, whole CLI command"] / figures["delta, whole CLI command"]
    print(f"--region HPF ({len(hpf):,} units, a subtree) takes {in_process:.2f}x the "
          f"exact-label query in process and {command:.2f}x as a whole command\n")  # fmt: skip
    checks = [
        ("exact-label query in process", query, GOALS["query"]),
        ("exact-label query, whole CLI command", figures["delta, whole CLI command"], GOALS["cli"]),
        ("region HPF in process", figures["region HPF (subtree), in process"], GOALS["query"]),
        ("region HPF, whole CLI command", figures["region HPF, whole CLI command"], GOALS["cli"]),
        ("lake remap", figures["lake remap, whole lake"], GOALS["remap"]),
        ("mapping per distinct label (ms)", per_label, GOALS["label_ms"]),
        ("skip check", figures["skip check (assets_index)"], GOALS["skip"]),
    ]
    if args.s3:
        s3 = s3_query(args)
        print(f"S3 (moto), {args.s3_assets:,} assets: publish {s3['publish']:.1f} s, compaction "
              f"{s3['compact']:.1f} s, region query {s3['query']:.3f} s in process, "
              f"{s3['cli']:.3f} s in a fresh process ({s3['found']:,} units)",
              flush=True)  # fmt: skip
        checks.append(("S3 region query", s3["query"], GOALS["s3"]))
    return max(_verdict(checks), _commit_goal(base, args.versions, args.recent_versions))


def _commit_goal(base: Path, versions: int, recent: int) -> int:
    shutil.rmtree(base / "versions", ignore_errors=True)
    found = commit_overhead(base / "versions", versions, recent)
    shutil.rmtree(base / "versions")
    return _verdict(
        [
            (
                f"publish at {versions:,} versions, every log file kept",
                found[f"{versions:,} versions"][0],
                GOALS["commit"],
            ),
            (
                f"publish at {versions:,} versions after compaction",
                found["housekept"][0],
                GOALS["commit"],
            ),
        ]
    )


def _verdict(checks: list[tuple[str, float, float]]) -> int:
    """Print each goal as met or missed; 1 if any was missed."""
    for name, seconds, goal in checks:
        print(
            f"goal {name}: {seconds:.3f} s <= {goal:g} s: {'met' if seconds <= goal else 'MISSED'}"
        )
    return 1 if any(seconds > goal for _, seconds, goal in checks) else 0


def _same(found: pd.DataFrame, expected: pd.DataFrame, when: str) -> None:
    keys = ["source", "dataset_id", "asset_id", "unit_id"]
    left = found[keys].astype(str).sort_values(keys).reset_index(drop=True)
    right = expected[keys].astype(str).sort_values(keys).reset_index(drop=True)
    if not left.equals(right):
        raise SystemExit(f"the Delta lake's answer {when} differs from the Hive lake's")


if __name__ == "__main__":
    sys.exit(main())
