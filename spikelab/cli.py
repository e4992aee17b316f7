"""The ``spikelab`` command: ingest into the lake, ask it questions, run the demo, serve.

Light commands (``--help``, ``lake …``, ``server …``) import neither Prefect nor the
format libraries; commands that run a flow start (or find) a Prefect server first and import
their flows while it comes up.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_RETENTION_HOURS = 168  # as spikelab.io.delta_lake, which imports pyarrow
EXIT_CODES = """\
exit status:
  0  every input or asset landed or was skipped (server status: the server runs)
  1  some input or asset failed, the others landed (server status: not running)
  2  usage or configuration error: bad option, missing file or config, port taken
"""
# A new PREFECT_HOME makes a Prefect server take ~20 s to start: Prefect's default limit.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",  # progress bars and a summary say what happens
}
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
}
_KEYWORD = re.compile(r"\b(" + "|".join(_OPTIONS) + r")=(?:(True)\b| ?)")
_TWICE = re.compile(r"(--[a-z-]+) (?:/|or) \1\b")
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class UsageError(Exception):
    """A bad argument: reported as one line, exit status 2."""


class FlowRunError(RuntimeError):
    """A flow run ended without a run summary (it crashed): exit status 1."""


def cli_words(message: str) -> str:
    """Name CLI options (``--format``) where a library message names keywords (``format=``)."""
    named = _KEYWORD.sub(
        lambda match: _OPTIONS[match.group(1)] + ("" if match.group(2) else " "), message
    )
    return _TWICE.sub(r"\1", named)  # "--trust-pickles / trust_pickles=True" says it once


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
        choices=("stream", "download"),
        default="stream",
        help="read only the Units over HTTP ranges (default) or download and verify each file",
    )
    dandi.add_argument("--max-assets", type=_count(1), help="ingest at most this many assets")
    dandi.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(dandi)
    _refresh_argument(dandi)
    _runner_arguments(dandi)
    nightly = sources.add_parser("nightly", help="every dandiset of a config file")
    nightly.add_argument(
        "--config", help="YAML list of dandisets (default: the one spikelab ships)"
    )
    nightly.add_argument("--api-base", help="DANDI API root (default: the public archive)")
    _lake_argument(nightly)
    _refresh_argument(nightly)
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
    files.add_argument(
        "--trust-pickles",
        action="store_true",
        help="load pickles (.pkl, .p, .pickle; object arrays in .npz): unpickling runs code "
        "the file carries, so give this only for files you trust",
    )
    _lake_argument(files)
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
    lake = commands.add_parser("lake", help="ask the lake, see its history, maintain it")
    questions = lake.add_subparsers(dest="question", required=True, metavar="QUESTION")
    summary = questions.add_parser("summary", help="assets, units and spikes per dataset")
    _as_of_argument(summary)
    _lake_argument(summary)
    units = questions.add_parser("units", help="units matching filters, across every source")
    units.add_argument("--region", action="append", default=[], help="brain region (repeatable)")
    units.add_argument("--source", choices=["dandi", "ibl", "files"], help="one source only")
    units.add_argument("--dataset", help="one dataset id only")
    units.add_argument("--min-rate", type=_finite(0.0), help="minimum firing rate in Hz")
    units.add_argument("--format", default="table", choices=["table", "csv", "parquet"])
    units.add_argument("--output", help="file to write (required with --format parquet)")
    _as_of_argument(units)
    _lake_argument(units)
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


def _add_server(commands: Any) -> None:
    server = commands.add_parser(
        "server",
        help="a local Prefect server that makes every flow-running command faster",
        description="Start, stop or check one local Prefect server (127.0.0.1) that every "
        "spikelab command then uses; its PID and URL are kept in $PREFECT_HOME.",
        epilog=EXIT_CODES,
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


def _check_lake(lake: str) -> None:
    if "://" not in lake and Path(lake).exists() and not Path(lake).is_dir():
        raise UsageError(f"--lake {lake} is a file, not a folder")


def _on_runner(flow: Any, args: argparse.Namespace) -> Any:
    """The flow set to the task runner the arguments ask for."""
    from spikelab.flows.runners import with_task_runner

    return with_task_runner(flow, args.task_runner, dask_address=args.dask_address)


def summaries_of(state: Any) -> list[dict[str, Any]]:
    """The run summaries a finished flow run carries, Completed or Failed alike.

    A flow with a failed asset ends in a Failed state that carries its summary (as the
    data of the state, or inside the :class:`~spikelab.exceptions.IngestFailedError` the
    state holds); a flow that crashed carries another exception: then
    :class:`FlowRunError` is raised.
    """
    from spikelab.exceptions import IngestFailedError

    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestFailedError):
        result = result.summary
    elif isinstance(result, BaseException):
        raise FlowRunError(f"the flow run failed: {type(result).__name__}: {result}") from result
    if isinstance(result, dict):
        return [result]
    if isinstance(result, list) and all(isinstance(item, dict) for item in result):
        return result
    raise TypeError(f"the flow run returned {type(result).__name__}, not a run summary")


@contextmanager
def _run_logs_off_console() -> Iterator[None]:
    """Keep flow- and task-run logs (tracebacks included) in Prefect, off the terminal.

    The run's records still reach Prefect's API (its UI and log); the command prints one
    line per failed input instead.
    """
    import logging

    loggers = [logging.getLogger(name) for name in _RUN_LOGGERS]
    before = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.propagate = False
    try:
        yield
    finally:
        for logger, propagate in zip(loggers, before, strict=True):
            logger.propagate = propagate


def _call_flow(flow: Any, backend: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Run ``flow`` once the backend answers; return its run summaries."""
    if backend is not None:
        backend.wait_ready()
    with _run_logs_off_console():
        state = flow(*args, return_state=True, **kwargs)
    return summaries_of(state)


def _flush_prefect_logs() -> None:
    """Send the run logs still queued to the temporary server before it stops."""
    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5, at_exit=False)


@contextmanager
def _prefect(keep_server: bool = False) -> Iterator[Any]:
    """A reachable Prefect API for the block (see :func:`spikelab.server.flow_backend`)."""
    from spikelab.server import flow_backend

    with flow_backend(keep_server=keep_server) as temporary:
        try:
            yield temporary
        finally:
            if temporary is not None:
                _flush_prefect_logs()


def _unencodable(paths: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Split paths into those Prefect can take and failed outcomes for the others."""
    usable, failed = [], []
    for path in paths:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            failed.append(
                {
                    "asset_id": shown,
                    "status": "failed",
                    "error": f"the file name {shown} is not valid UTF-8, so it cannot be a "
                    "flow parameter: rename the file (e.g. with convmv) and run again",
                }
            )
        else:
            usable.append(path)
    return usable, failed


def _with_failures(
    summaries: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Add inputs that never reached the flow to its (first) run summary."""
    if not failed:
        return summaries
    first = summaries[0] if summaries else {"counts": {"ok": 0, "skipped": 0, "failed": 0}}
    counts = {**first["counts"], "failed": first["counts"]["failed"] + len(failed)}
    merged = {**first, "counts": counts, "assets": [*first.get("assets", []), *failed]}
    return [merged, *summaries[1:]]


def _ingest_files(args: argparse.Namespace) -> list[dict[str, Any]]:
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    usable, failed = _unencodable(args.paths)
    if not usable:
        return _with_failures([], failed)
    options: dict[str, Any] = {"format": args.format, "lake": args.lake, "refresh": args.refresh}
    if args.trust_pickles:
        options["trust_pickles"] = True
    with _prefect() as backend:
        from spikelab.flows import ingest_files

        paths = [str(Path(path).resolve()) for path in usable]
        summaries = _call_flow(_on_runner(ingest_files, args), backend, paths, **options)
    return _with_failures(summaries, failed)


def _ingest_dandi(args: argparse.Namespace) -> list[dict[str, Any]]:
    from spikelab.ids import normalize_dandiset_id, normalize_version

    try:
        dandiset = normalize_dandiset_id(args.dandiset_id)
        version = normalize_version(args.version)
    except ValueError as error:
        raise UsageError(str(error)) from None
    options = {"api_base": args.api_base} if args.api_base else {}
    with _prefect() as backend:
        from spikelab.flows import ingest_dandiset

        return _call_flow(
            _on_runner(ingest_dandiset, args),
            backend,
            dandiset,
            version=version,
            path_glob=args.glob,
            lake=args.lake,
            raw_zarr=args.raw_zarr,
            max_assets=args.max_assets,
            refresh=args.refresh,
            transfer=args.transfer,
            **options,
        )


def nightly_config(given: str | None) -> Path:
    """The nightly config to read: the one given, else the packaged default, absolute."""
    from spikelab.config import default_config_path

    return Path(given).resolve() if given else default_config_path("dandisets.yaml").resolve()


def _ingest_nightly(args: argparse.Namespace) -> list[dict[str, Any]]:
    from spikelab.config import DandisetsConfig, load_config

    config = nightly_config(args.config)
    load_config(config, DandisetsConfig)  # a bad file is a usage error, before Prefect
    options = {"api_base": args.api_base} if args.api_base else {}
    with _prefect() as backend:
        from spikelab.flows import ingest_dandisets

        return _call_flow(
            ingest_dandisets,
            backend,
            config=str(config),
            lake=args.lake,
            refresh=args.refresh,
            **options,
        )


def _ingest_ibl(args: argparse.Namespace) -> list[dict[str, Any]]:
    with _prefect() as backend:
        from spikelab.flows import ingest_ibl_region

        return _call_flow(
            _on_runner(ingest_ibl_region, args),
            backend,
            args.regions,
            min_units=args.min_units,
            min_fraction_in_target=args.min_fraction,
            max_probes=args.max_probes,
            lake=args.lake,
            refresh=args.refresh,
        )


def _run_ingest(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the ingest flow the arguments name; return its run summaries."""
    if getattr(args, "dask_address", None) and args.task_runner != "dask":
        raise UsageError("--dask-address needs --task-runner dask")
    run_source = {
        "files": _ingest_files,
        "dandi": _ingest_dandi,
        "nightly": _ingest_nightly,
        "ibl": _ingest_ibl,
    }[args.source]
    return run_source(args)


def _one_line(text: str | None) -> str:
    lines = (text or "unknown error").strip().splitlines()
    return cli_words(lines[0] if lines else "unknown error")


def _print_run(summary: dict[str, Any], lake: str) -> bool:
    """Print a run's counts and one line per failed asset; return whether any failed."""
    counts = summary["counts"]
    print(
        f"{counts['ok']} loaded, {counts['skipped']} skipped, {counts['failed']} failed "
        f"-> lake {lake}"
    )
    for asset in summary.get("assets", []):
        if asset["status"] == "failed":
            print(f"  failed: {asset['asset_id']}: {_one_line(asset.get('error'))}")
    return bool(counts["failed"])


def _lake_summary(lake: str, as_of: str | None = None) -> None:
    from spikelab.lake_queries import SUMMARY_COLUMNS, format_rows, summary_rows

    rows = summary_rows(lake, as_of)
    print(format_rows(SUMMARY_COLUMNS, rows) if rows else "the lake is empty")


def _lake_units(args: argparse.Namespace) -> None:
    from spikelab.lake_queries import export_units, format_rows, matching_units

    if args.format == "parquet" and not args.output:
        raise UsageError("--format parquet needs --output FILE")
    filters: dict[str, Any] = {
        "regions": args.region,
        "source": args.source,
        "dataset": args.dataset,
        "min_rate_hz": args.min_rate,
    }
    if args.format == "table":
        columns, rows = matching_units(args.lake, as_of=args.as_of, **filters)
        print(format_rows(columns, rows) if rows else "no matching units")
        return
    sys.stdout.flush()
    export_units(args.lake, args.output or "/dev/stdout", args.format, as_of=args.as_of, **filters)
    if args.output:
        print(f"units -> {args.output}")


def _lake_history(lake: str, limit: int | None) -> None:
    from spikelab.lake_queries import HISTORY_COLUMNS, format_rows, history_rows

    rows = history_rows(lake, limit)
    print(format_rows(HISTORY_COLUMNS, rows) if rows else "the lake has no versions yet")


def _lake_compact(lake: str, retention_hours: int) -> None:
    from spikelab.io.delta_lake import compact

    report = compact(lake, retention_hours=retention_hours)
    if not report:
        print("the lake is empty: nothing to compact")
    for table, done in report.items():
        print(
            f"{table}: {done['files_removed']} files merged into {done['files_added']}, "
            f"{done['files_vacuumed']} unused files deleted, now version {done['version']}"
        )


def _lake_migrate(old: str, new: str) -> None:
    from spikelab.io import storage
    from spikelab.io.delta_lake import open_table, units_uri
    from spikelab.io.delta_migrate import migrate
    from spikelab.io.lake import resolve_lake

    old, new = resolve_lake(old), resolve_lake(new)
    if not any(storage.list_files(storage.join(old, kind), "") for kind in ("units", "manifests")):
        raise UsageError(
            f"{old} holds no units/ or manifests/ files of the old layout: give the root of "
            "the lake to migrate"
        )
    if open_table(units_uri(new)) is not None:
        raise UsageError(f"{new} already holds a lake's tables: migrate into a new root")
    done = migrate(old, new)
    print(
        f"{done['assets']} assets, {done['units']} units and {done['files_copied']} other "
        f"files -> lake {new} ({old} is unchanged)"
    )


def _demo(lake: str, keep_server: bool) -> bool:
    """Ingest the synthetic dataset; return whether any input failed."""
    with tempfile.TemporaryDirectory(prefix="spikelab-demo-") as folder:
        with _prefect(keep_server=keep_server) as backend:
            from spikelab.demo_data import write_demo_dataset
            from spikelab.flows import ingest_files

            inputs = write_demo_dataset(Path(folder) / "demo")
            print(f"wrote a synthetic dataset: {', '.join(p.name for p in inputs)}")
            (summary,) = _call_flow(ingest_files, backend, [str(p) for p in inputs], lake=lake)
    failed = _print_run(summary, lake)
    _lake_summary(lake)
    print(f"\nquery it: spikelab lake units --region CA1 --lake {lake}")
    return failed


def _server(action: str, port: int | None) -> int:
    from spikelab import server

    if action == "start":
        record, started = server.start_server(port)
        verb = "started" if started else "already running:"
        print(f"{verb} Prefect server {record.address} (PID {record.pid}, log {record.log})")
        print(f"Prefect UI: {record.address}; every spikelab command now uses this server")
        return EXIT_OK
    if action == "stop":
        print(server.stop_server())
        return EXIT_OK
    return _server_status()


def _server_status() -> int:
    from spikelab import server

    status, found = server.server_status()
    if found is None:
        print("no spikelab Prefect server is running")
    elif status == "stale":
        print(
            f"stale: {server.record_path()} names PID {found.pid}, which is gone or is "
            "another program (`spikelab server stop` removes the record)"
        )
    else:
        print(f"{status}: Prefect server {found.address} (PID {found.pid})")
    return EXIT_OK if status == "running" else EXIT_FAILED


def _serve() -> None:
    """Serve the deployments against the local, configured or a temporary server."""
    from spikelab.deployments import check_lake_variable

    check_lake_variable()  # a usage error before any server starts
    with _prefect() as temporary:
        from spikelab.deployments import serve_all

        if temporary is not None:
            temporary.wait_ready()
        serve_all()


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; return the exit status."""
    if hasattr(args, "lake"):
        from spikelab.io.lake import resolve_lake

        args.lake = resolve_lake(args.lake)  # absolute before anything is recorded
        _check_lake(args.lake)
    if args.command == "ingest":
        failed = [_print_run(summary, args.lake) for summary in _run_ingest(args)]
        return EXIT_FAILED if any(failed) else EXIT_OK
    if args.command == "lake":
        _lake(args)
    elif args.command == "demo":
        return EXIT_FAILED if _demo(args.lake, args.keep_server) else EXIT_OK
    elif args.command == "server":
        return _server(args.action, getattr(args, "port", None))
    else:
        _serve()
    return EXIT_OK


def _lake(args: argparse.Namespace) -> None:
    """Answer one ``spikelab lake`` question."""
    if args.question == "summary":
        _lake_summary(args.lake, args.as_of)
    elif args.question == "units":
        _lake_units(args)
    elif args.question == "history":
        _lake_history(args.lake, args.limit)
    elif args.question == "compact":
        _lake_compact(args.lake, args.retention_hours)
    else:
        _lake_migrate(args.old, args.new)


def _is_broken_pipe(error: BaseException) -> bool:
    """Whether the reader of our output went away (``spikelab lake units … | head``)."""
    if isinstance(error, BrokenPipeError):
        return True
    return "broken pipe" in str(error).lower() or getattr(error, "errno", None) == errno.EPIPE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 some input failed, 2 usage)."""
    from spikelab.exceptions import PrefectServerError, ServerPortInUseError

    args = build_parser().parse_args(argv)
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        return _dispatch(args)
    except (UsageError, ServerPortInUseError, FileNotFoundError, ValueError) as error:
        print(f"spikelab: error: {cli_words(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("spikelab: interrupted", file=sys.stderr)
        return 130
    except PrefectServerError as error:
        print(f"spikelab: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # noqa: BLE001 - one clear line instead of a traceback
        if _is_broken_pipe(error):
            _quiet_stdout()
            return EXIT_OK
        print(f"spikelab: error: {type(error).__name__}: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED


def main() -> None:
    """Console-script entry point."""
    status = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(status)


if __name__ == "__main__":
    main()
