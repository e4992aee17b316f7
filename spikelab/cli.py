"""The ``spikelab`` command: ingest into the lake, ask it questions, run the demo, serve."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_LAKE = "./spikelab-lake"
# A new PREFECT_HOME makes the embedded server take ~20 s to start: Prefect's default limit.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",  # progress bars and a summary say what happens
}


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def _lake_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lake",
        default=DEFAULT_LAKE,
        help=f"lake root folder or s3:// URL (default {DEFAULT_LAKE})",
    )


def _refresh_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh", action="store_true", help="load everything again, even unchanged inputs"
    )


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-runner",
        default="threads",
        choices=["threads", "dask"],
        help="run tasks in a thread pool (default) or on Dask (pip install 'spikelab[dask]')",
    )
    parser.add_argument("--dask-address", help="scheduler address of a running Dask cluster")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="spikelab",
        description="Ingest extracellular spike data into SpikeData and a Parquet lake.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="ingest a source into the lake")
    sources = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")
    dandi = sources.add_parser("dandi", help="a DANDI dandiset (Units of every NWB asset)")
    dandi.add_argument("dandiset_id", help="six-digit dandiset id, e.g. 000006")
    dandi.add_argument("--version", default="draft", help="dandiset version (default draft)")
    dandi.add_argument("--glob", default="*.nwb", help="server-side asset path filter")
    dandi.add_argument("--raw-zarr", action="store_true", help="also save raw traces as Zarr")
    dandi.add_argument(
        "--transfer",
        choices=("stream", "download"),
        default="stream",
        help="read only the Units over HTTP ranges (default) or download and verify each file",
    )
    dandi.add_argument("--max-assets", type=int, help="ingest at most this many assets")
    dandi.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(dandi)
    _refresh_argument(dandi)
    _runner_arguments(dandi)
    nightly = sources.add_parser("nightly", help="every dandiset of a config file")
    nightly.add_argument(
        "--config", default="configs/dandisets.yaml", help="YAML list of dandisets"
    )
    nightly.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(nightly)
    _refresh_argument(nightly)
    ibl = sources.add_parser("ibl", help="IBL Brain-Wide Map probes in some brain regions")
    ibl.add_argument("--regions", nargs="+", required=True, help="Beryl acronyms, e.g. MOs MOp")
    ibl.add_argument("--min-units", type=int, default=0, help="good units a probe needs")
    ibl.add_argument(
        "--min-fraction", type=float, default=0.0, help="fraction of its good units in the regions"
    )
    ibl.add_argument("--max-probes", type=int, help="ingest at most this many probes")
    _lake_argument(ibl)
    _refresh_argument(ibl)
    _runner_arguments(ibl)
    files = sources.add_parser("files", help="local NWB / KiloSort / HDF5 / npz / pickle inputs")
    files.add_argument("paths", nargs="+", help="files or KiloSort folders")
    files.add_argument(
        "--format",
        default="auto",
        choices=["auto", "nwb", "kilosort", "hdf5", "spikelab_npz", "pickle"],
        help="input format (default: from each path)",
    )
    _lake_argument(files)
    _refresh_argument(files)
    _runner_arguments(files)

    lake = commands.add_parser("lake", help="ask the lake")
    questions = lake.add_subparsers(dest="question", required=True, metavar="QUESTION")
    summary = questions.add_parser("summary", help="assets, units and spikes per dataset")
    _lake_argument(summary)
    units = questions.add_parser("units", help="units matching filters, across every source")
    units.add_argument("--region", action="append", default=[], help="brain region (repeatable)")
    units.add_argument("--source", choices=["dandi", "ibl", "files"], help="one source only")
    units.add_argument("--dataset", help="one dataset id only")
    units.add_argument("--min-rate", type=float, help="minimum firing rate in Hz")
    units.add_argument("--format", default="table", choices=["table", "csv", "parquet"])
    units.add_argument("--output", help="file to write (required with --format parquet)")
    _lake_argument(units)

    demo = commands.add_parser("demo", help="ingest a synthetic dataset into a local lake")
    _lake_argument(demo)
    commands.add_parser("serve", help="serve the nightly, manual and IBL-region deployments")
    return parser


def _check_lake(lake: str) -> None:
    if "://" not in lake and Path(lake).exists() and not Path(lake).is_dir():
        raise UsageError(f"--lake {lake} is a file, not a folder")


def _on_runner(flow: Any, args: argparse.Namespace) -> Any:
    """The flow set to the task runner the arguments ask for."""
    from spikelab.flows.runners import with_task_runner

    return with_task_runner(flow, args.task_runner, dask_address=args.dask_address)


def _run_ingest(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the ingest flow the arguments name; return its run summaries."""
    from spikelab.loaders._dandi_client import DEFAULT_API_BASE, normalize_dandiset_id

    if args.source == "nightly":
        from spikelab.config import DandisetsConfig, load_config
        from spikelab.flows import ingest_dandisets

        load_config(args.config, DandisetsConfig)  # a bad file is a usage error, before Prefect
        return ingest_dandisets(
            config=str(Path(args.config).resolve()),
            lake=args.lake,
            api_base=args.api_base or DEFAULT_API_BASE,
            refresh=args.refresh,
        )

    if args.source == "dandi":
        try:
            dandiset = normalize_dandiset_id(args.dandiset_id)
        except ValueError as error:
            raise UsageError(str(error)) from None
        from spikelab.flows import ingest_dandiset

        return [
            _on_runner(ingest_dandiset, args)(
                dandiset,
                version=args.version,
                path_glob=args.glob,
                lake=args.lake,
                raw_zarr=args.raw_zarr,
                max_assets=args.max_assets,
                api_base=args.api_base or DEFAULT_API_BASE,
                refresh=args.refresh,
                transfer=args.transfer,
            )
        ]
    if args.source == "ibl":
        from spikelab.flows import ingest_ibl_region

        return [
            _on_runner(ingest_ibl_region, args)(
                args.regions,
                min_units=args.min_units,
                min_fraction_in_target=args.min_fraction,
                max_probes=args.max_probes,
                lake=args.lake,
                refresh=args.refresh,
            )
        ]
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    from spikelab.flows import ingest_files

    return [
        _on_runner(ingest_files, args)(
            [str(Path(p).resolve()) for p in args.paths],
            format=args.format,
            lake=args.lake,
            refresh=args.refresh,
        )
    ]


def _print_run(summary: dict[str, Any], lake: str) -> None:
    counts = summary["counts"]
    print(
        f"{counts['ok']} loaded, {counts['skipped']} skipped, {counts['failed']} failed "
        f"-> lake {os.path.abspath(lake) if '://' not in lake else lake}"
    )
    for asset in summary["assets"]:
        if asset["status"] == "failed":
            print(f"  failed: {asset['asset_id']}: {asset['error']}")


def _lake_units(args: argparse.Namespace) -> None:
    from spikelab.lake_queries import export_units, find_units

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    filters: dict[str, Any] = {
        "regions": args.region,
        "source": args.source,
        "dataset": args.dataset,
        "min_rate_hz": args.min_rate,
    }
    if args.format == "table":
        frame = find_units(args.lake, **filters)
        print(frame.to_string(index=False) if len(frame) else "no matching units")
        return
    sys.stdout.flush()
    export_units(args.lake, args.output or "/dev/stdout", args.format, **filters)
    if args.output:
        print(f"units -> {args.output}")


def _demo(lake: str) -> None:
    from spikelab.demo_data import write_demo_dataset
    from spikelab.flows import ingest_files
    from spikelab.lake_queries import lake_summary

    with tempfile.TemporaryDirectory(prefix="spikelab-demo-") as folder:
        inputs = write_demo_dataset(Path(folder) / "demo")
        print(f"wrote a synthetic dataset: {', '.join(p.name for p in inputs)}")
        summary = ingest_files([str(p) for p in inputs], lake=lake)
    _print_run(summary, lake)
    print(lake_summary(lake).to_string(index=False))
    print(f"\nquery it: spikelab lake units --region CA1 --lake {lake}")


def _serve() -> None:
    from spikelab.deployments import serve_all

    serve_all()


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        if hasattr(args, "lake"):
            _check_lake(args.lake)
        if args.command == "ingest":
            for summary in _run_ingest(args):
                _print_run(summary, args.lake)
        elif args.command == "lake" and args.question == "summary":
            from spikelab.lake_queries import lake_summary

            frame = lake_summary(args.lake)
            print(frame.to_string(index=False) if len(frame) else "the lake is empty")
        elif args.command == "lake":
            _lake_units(args)
        elif args.command == "demo":
            _demo(args.lake)
        else:
            _serve()
    except UsageError as error:
        print(f"spikelab: error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"spikelab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikelab: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one clear line instead of a traceback
        print(f"spikelab: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
