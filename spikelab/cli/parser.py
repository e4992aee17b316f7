"""The ``spikelab`` command's arguments, exit codes and wording of errors."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from typing import Any, get_args

from spikelab.choices import FileFormat, Source, TaskRunnerName, Transfer

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_RETENTION_HOURS = 168  # as spikelab.io.delta_lake, which imports pyarrow
EXIT_CODES = """\
exit status:
  0  every input or asset landed or was skipped (server status: the server runs)
  1  some input or asset failed, the others landed (server status: not running)
  2  usage or configuration error: bad option, missing file or config, port taken
"""
LAKE_EXIT_CODES = """\
exit status:
  0  answered (a lake folder that does not exist answers as an empty lake)
  1  the lake could not be read or written (the error says why)
  2  usage error: bad option, a version or time the lake does not have
"""
SERVER_EXIT_CODES = """\
exit status:
  0  done (status: the server runs)
  1  the server could not start or stop (status: no server runs)
  2  usage error: bad option, port taken
"""
# Python keyword arguments that messages from the library may name, and their CLI options.
_OPTIONS = {
    "format": "--format",
    "trust_pickles": "--trust-pickles",
    "min_rate_hz": "--min-rate",
    "min_units": "--min-units",
    "min_fraction_in_target": "--min-fraction",
    "max_probes": "--max-probes",
    "max_assets": "--max-assets",
    "path_glob": "--glob",
    "raw_zarr": "--raw-zarr",
    "api_base": "--api-base",
    "lake": "--lake",
    "refresh": "--refresh",
    "transfer": "--transfer",
    "concurrency": "--concurrency",
}
_KEYWORD = re.compile(r"\b(" + "|".join(_OPTIONS) + r")=(?:(True)\b| ?)")
_TWICE = re.compile(r"(--[a-z-]+) (?:/|or) \1\b")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


def cli_words(message: str) -> str:
    """Name CLI options (``--format``) where a library message names keywords (``format=``)."""
    named = _KEYWORD.sub(
        lambda match: _OPTIONS[match.group(1)] + ("" if match.group(2) else " "), message
    )
    return _TWICE.sub(r"\1", named)  # "--trust-pickles / trust_pickles=True" says it once


def one_line(text: str | None) -> str:
    """The first line of an error text, in CLI words."""
    lines = (text or "unknown error").strip().splitlines()
    return cli_words(lines[0] if lines else "unknown error")


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _finite(low: float, high: float = math.inf) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            bounds = f"between {low:g} and {high:g}" if math.isfinite(high) else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text}")
        return value

    return parse


def _lake_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lake",
        help="lake root folder or s3:// URL (default: $SPIKELAB_LAKE, else ./spikelab-lake)",
    )


def _aliases_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region-aliases",
        metavar="FILE",
        help="your region alias CSV (alias,acronym,kind,reason), used beside the packaged "
        "one to map brain-region labels (default: $SPIKELAB_REGION_ALIASES)",
    )


def _refresh_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refresh", action="store_true", help="load everything again, even unchanged inputs"
    )


def _concurrency_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        type=_count(1),
        help="assets read at once (default: $SPIKELAB_CONCURRENCY, else 16 per core, 32-128)",
    )


def _runner_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task-runner",
        default="threads",
        choices=get_args(TaskRunnerName),
        help="run tasks in a thread pool (default) or on Dask (pip install 'spikelab[dask]')",
    )
    parser.add_argument("--dask-address", help="scheduler address of a running Dask cluster")


def _add_ingest(commands: Any) -> None:
    ingest = commands.add_parser("ingest", help="ingest a source into the lake", epilog=EXIT_CODES)
    ingest.formatter_class = argparse.RawDescriptionHelpFormatter
    sources = ingest.add_subparsers(dest="source", required=True, metavar="SOURCE")
    dandi = sources.add_parser("dandi", help="a DANDI dandiset (Units of every NWB asset)")
    dandi.add_argument("dandiset_id", help="six-digit dandiset id, e.g. 000006")
    dandi.add_argument("--version", default="draft", help="dandiset version (default draft)")
    dandi.add_argument("--glob", default="*.nwb", help="server-side asset path filter")
    dandi.add_argument("--raw-zarr", action="store_true", help="also save raw traces as Zarr")
    dandi.add_argument(
        "--transfer",
        choices=get_args(Transfer),
        default="stream",
        help="read only the Units over HTTP ranges (default) or download and verify each file",
    )
    dandi.add_argument("--max-assets", type=_count(1), help="ingest at most this many assets")
    dandi.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(dandi)
    _aliases_argument(dandi)
    _refresh_argument(dandi)
    _concurrency_argument(dandi)
    _runner_arguments(dandi)
    nightly = sources.add_parser("nightly", help="every dandiset of a config file")
    nightly.add_argument(
        "--config", help="YAML list of dandisets (default: the one spikelab ships)"
    )
    nightly.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(nightly)
    _aliases_argument(nightly)
    _refresh_argument(nightly)
    _concurrency_argument(nightly)
    ibl = sources.add_parser("ibl", help="IBL Brain-Wide Map probes in some brain regions")
    ibl.add_argument("--regions", nargs="+", required=True, help="Beryl acronyms, e.g. MOs MOp")
    ibl.add_argument("--min-units", type=_count(0), default=0, help="good units a probe needs")
    ibl.add_argument(
        "--min-fraction",
        type=_finite(0.0, 1.0),
        default=0.0,
        help="fraction of its good units in the regions",
    )
    ibl.add_argument("--max-probes", type=_count(1), help="ingest at most this many probes")
    _lake_argument(ibl)
    _aliases_argument(ibl)
    _refresh_argument(ibl)
    _runner_arguments(ibl)
    files = sources.add_parser("files", help="local NWB / KiloSort / HDF5 / npz / pickle inputs")
    files.add_argument(
        "paths",
        nargs="+",
        help="files, KiloSort folders, or folders holding them (searched recursively)",
    )
    files.add_argument(
        "--glob",
        metavar="PATTERN",
        help="in folders, take the files matching PATTERN, e.g. '*.nwb' or 'sub-*/*.h5' "
        "(default: NWB files, .nwb.zarr stores and KiloSort folders)",
    )
    files.add_argument(
        "--dataset", metavar="NAME", help="dataset to land in (default: each input's folder)"
    )
    files.add_argument(
        "--format",
        default="auto",
        choices=get_args(FileFormat),
        help="input format (default: from each path)",
    )
    files.add_argument(
        "--trust-pickles",
        action="store_true",
        help="load pickles (.pkl, .p, .pickle; object arrays in .npz): unpickling runs code "
        "the file carries, so give this only for files you trust",
    )
    _lake_argument(files)
    _aliases_argument(files)
    _refresh_argument(files)
    _runner_arguments(files)


def _as_of_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as-of",
        metavar="VERSION|TIME",
        help="read the lake as of a table version (see `spikelab lake history`) or an ISO "
        "8601 time, e.g. 2026-12-01T22:00:00Z (default: the current version)",
    )


def _add_lake(commands: Any) -> None:
    lake = commands.add_parser(
        "lake",
        help="ask the lake, see its history, maintain it",
        epilog=LAKE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    questions = lake.add_subparsers(dest="question", required=True, metavar="QUESTION")
    summary = questions.add_parser("summary", help="assets, units and spikes per dataset")
    _as_of_argument(summary)
    _lake_argument(summary)
    units = questions.add_parser("units", help="units matching filters, across every source")
    _unit_filters(units)
    units.add_argument(
        "--columns",
        nargs="+",
        default=[],
        metavar="NAME",
        help="more columns: any units column (attr_quality, region_beryl, spike_times_ms for "
        "parquet ...) or sessions column (species, sex, age_days, subject_id, lab ...)",
    )
    units.add_argument(
        "--format",
        default="table",
        choices=["table", "csv", "parquet"],
        help="a table to read (default), CSV (to stdout or --output) or Parquet (--output)",
    )
    units.add_argument("--output", help="file to write (required with --format parquet)")
    _as_of_argument(units)
    _lake_argument(units)
    _add_remove_and_export(questions)
    _add_regions(questions)
    history = questions.add_parser(
        "history", help="the lake's versions: when, which flow run, how many assets"
    )
    history.add_argument("--limit", type=_count(1), help="show only the newest N versions")
    _lake_argument(history)
    compact = questions.add_parser(
        "compact", help="merge small files, then delete files no recent version uses"
    )
    compact.add_argument(
        "--retention-hours",
        type=_count(0),
        metavar="H",
        default=DEFAULT_RETENTION_HOURS,
        help="keep time travel working for versions this recent "
        f"(default {DEFAULT_RETENTION_HOURS}, a week)",
    )
    _lake_argument(compact)
    migrate = questions.add_parser(
        "migrate",
        help="copy a lake of the old layout (a Parquet file per asset) into Delta tables",
        description="Read the lake at OLD (one Parquet file per asset under units/source=…/"
        "dataset=…) and write it as Delta tables under NEW; OLD is left untouched.",
    )
    migrate.add_argument("old", metavar="OLD", help="root of the lake in the old layout")
    migrate.add_argument("new", metavar="NEW", help="root of the new lake (empty or missing)")


def _unit_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region",
        action="append",
        default=[],
        help="Allen CCF structure, acronym or name, any case; its substructures too "
        "(repeatable: HPF, CA1, VISp, 'hippocampal formation')",
    )
    parser.add_argument(
        "--region-label",
        action="append",
        default=[],
        metavar="TEXT",
        help="brain region label exactly as the file wrote it (repeatable)",
    )
    parser.add_argument("--source", choices=get_args(Source), help="one source only")
    parser.add_argument("--dataset", help="one dataset id only")
    parser.add_argument("--min-rate", type=_finite(0.0), help="minimum firing rate in Hz")
    parser.add_argument("--species", help="subjects of one species (mouse, 'Mus musculus' ...)")
    parser.add_argument("--good", action="store_true", help="only units whose quality is good")


def _add_regions(questions: Any) -> None:
    regions = questions.add_parser(
        "regions", help="units per brain region, and the labels the lake could not map"
    )
    regions.add_argument(
        "--level",
        choices=["beryl", "cosmos", "allen"],
        default="beryl",
        help="count by Beryl (default), Cosmos or full Allen structures",
    )
    _as_of_argument(regions)
    _lake_argument(regions)
    remap = questions.add_parser(
        "remap",
        help="map every unit onto brain regions again (after the alias table changed)",
        description="Recompute the region and quality columns of every unit from its raw "
        "label, in one commit, without loading any source file again; adds the regions and "
        "sessions tables to a lake written before they existed.",
    )
    remap.add_argument(
        "--region-aliases",
        metavar="FILE",
        help="your alias CSV (alias,acronym,kind,reason), added to the packaged one "
        "(default: $SPIKELAB_REGION_ALIASES)",
    )
    _lake_argument(remap)


def _add_remove_and_export(questions: Any) -> None:
    remove = questions.add_parser(
        "remove",
        help="remove assets or a whole dataset (their rows, manifests and rasters)",
        description="Remove assets from the lake: one commit to the assets table unpublishes "
        "them, then their units rows, manifests and rasters are deleted. `--as-of` still "
        "reads them until `spikelab lake compact` deletes the old files.",
    )
    remove.add_argument(
        "--asset",
        action="append",
        metavar="ID",
        help="asset id (repeatable; with --dataset, only that dataset's)",
    )
    remove.add_argument("--dataset", metavar="NAME", help="every asset of this dataset")
    remove.add_argument("--source", choices=get_args(Source), help="one source only")
    _lake_argument(remove)
    export = questions.add_parser(
        "export",
        help="write the matching units with their spike trains (NWB, SpikeLab .npz, Parquet)",
    )
    _unit_filters(export)
    export.add_argument("--format", required=True, choices=["nwb", "npz", "parquet"])
    export.add_argument("--output", required=True, metavar="FILE", help="file to write")
    _as_of_argument(export)
    _lake_argument(export)


def _add_server(commands: Any) -> None:
    server = commands.add_parser(
        "server",
        help="a local Prefect server that makes every flow-running command faster",
        description="Start, stop or check one local Prefect server (127.0.0.1) that every "
        "spikelab command then uses; its PID and URL are kept in $PREFECT_HOME.",
        epilog=SERVER_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = server.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the server and leave it running")
    start.add_argument(
        "--port",
        type=_count(1),
        help="port on 127.0.0.1 (default: 4200 when free, else any free port)",
    )
    actions.add_parser("stop", help="stop the server spikelab started")
    actions.add_parser("status", help="say whether the server runs")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="spikelab",
        description="Ingest extracellular spike data into SpikeData and a lake of Delta tables.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_ShowVersion)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_ingest(commands)
    _add_lake(commands)
    demo = commands.add_parser("demo", help="ingest a synthetic dataset into a local lake")
    _lake_argument(demo)
    demo.add_argument(
        "--keep-server",
        action="store_true",
        help="start a local Prefect server and leave it running (see `spikelab server`)",
    )
    _add_server(commands)
    commands.add_parser("serve", help="serve the nightly, manual and IBL-region deployments")
    return parser


class _ShowVersion(argparse.Action):
    """``--version``: look the installed version up only when asked (it costs ~25 ms)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, nargs=0, help="show the version and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("spikelab")
        except PackageNotFoundError:  # run from a source tree that was never installed
            installed = "(not installed)"
        print(f"{parser.prog} {installed}")
        parser.exit()
