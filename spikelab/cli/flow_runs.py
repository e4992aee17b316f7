"""Run a flow from the command line: a Prefect backend, the run, its summaries."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spikelab.cli.lake import lake_summary
from spikelab.cli.parser import UsageError, one_line

_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class FlowRunError(RuntimeError):
    """A flow run ended without a run summary (it crashed): exit status 1."""


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


def _check_configured_api() -> None:
    """Refuse a configured Prefect API that nothing answers at (a usage error, exit 2).

    Raises
    ------
    UsageError
        ``PREFECT_API_URL`` (environment or active Prefect profile) names an address where
        no server answers: the message names it and says what to do.
    """
    from spikelab.server import configured_api_url, reachable

    url = configured_api_url()
    if not url or reachable(url):
        return
    if os.environ.get("PREFECT_API_URL"):
        where, fix = "", "`unset PREFECT_API_URL`"
    else:
        where, fix = " (from the active Prefect profile)", "`prefect config unset PREFECT_API_URL`"
    raise UsageError(
        f"PREFECT_API_URL={url}{where} does not answer (no Prefect server there): start that "
        f"server, or {fix} to let spikelab use its own (`spikelab server start` keeps one "
        "running)"
    )


@contextmanager
def prefect_backend(keep_server: bool = False) -> Iterator[Any]:
    """A reachable Prefect API for the block (see :func:`spikelab.server.flow_backend`)."""
    from spikelab.server import flow_backend

    _check_configured_api()
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
    options.update(
        {name: getattr(args, name) for name in ("dataset", "glob") if getattr(args, name)}
    )
    with prefect_backend() as backend:
        from spikelab.flows import ingest_files
        from spikelab.flows.files import expand_inputs

        paths = [str(Path(path).resolve()) for path in usable]
        try:
            expand_inputs(paths, args.glob)  # a folder with no input: before the run
        except ValueError as error:
            raise UsageError(str(error)) from None
        summaries = _call_flow(_on_runner(ingest_files, args), backend, paths, **options)
    return _with_failures(summaries, failed)


def _ingest_dandi(args: argparse.Namespace) -> list[dict[str, Any]]:
    from spikelab.ids import DandisetRef

    try:
        where = DandisetRef.parse(args.dandiset_id, args.version)
    except ValueError as error:
        raise UsageError(str(error)) from None
    options = {"api_base": args.api_base} if args.api_base else {}
    with prefect_backend() as backend:
        from spikelab.flows import ingest_dandiset

        return _call_flow(
            _on_runner(ingest_dandiset, args),
            backend,
            where.dandiset_id,
            version=where.version,
            path_glob=args.glob,
            lake=args.lake,
            raw_zarr=args.raw_zarr,
            max_assets=args.max_assets,
            refresh=args.refresh,
            transfer=args.transfer,
            concurrency=args.concurrency,
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
    with prefect_backend() as backend:
        from spikelab.flows import ingest_dandisets

        return _call_flow(
            ingest_dandisets,
            backend,
            config=str(config),
            lake=args.lake,
            refresh=args.refresh,
            concurrency=args.concurrency,
            **options,
        )


def _ingest_ibl(args: argparse.Namespace) -> list[dict[str, Any]]:
    from spikelab.loaders.ibl import alyx_login

    alyx_login()  # no account configured: a configuration error, before any flow runs
    with prefect_backend() as backend:
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


def use_region_aliases(path: str) -> None:
    """Map regions with the user's alias file too: checked now, used by the flow's loads.

    The file is read once here, so a bad line is a usage error before any flow runs; the
    flow's mapper reads ``$SPIKELAB_REGION_ALIASES``.
    """
    from spikelab.brain_regions import ALIASES_ENV, AliasTable, RegionMapper
    from spikelab.io.brain_columns import ontology

    location = os.path.abspath(path)
    aliases = AliasTable.load(location)
    tree = ontology()
    if tree is not None:
        RegionMapper(tree, aliases)  # every alias must name an Allen acronym
    os.environ[ALIASES_ENV] = location


def run_ingest(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the ingest flow the arguments name; return its run summaries."""
    if getattr(args, "dask_address", None) and args.task_runner != "dask":
        raise UsageError("--dask-address needs --task-runner dask")
    if args.region_aliases:
        use_region_aliases(args.region_aliases)
    run_source = {
        "files": _ingest_files,
        "dandi": _ingest_dandi,
        "nightly": _ingest_nightly,
        "ibl": _ingest_ibl,
    }[args.source]
    return run_source(args)


def print_run(summary: dict[str, Any], lake: str) -> bool:
    """Print a run's counts and one line per failed asset; return whether any failed.

    Assets skipped because the lake already holds them as they are count as
    ``unchanged``; ``skipped`` counts only those the lake records as skipped (a Zarr
    asset, say), as the ``skipped`` column of ``spikelab lake summary`` does.
    """
    counts = summary["counts"]
    from spikelab.flows._runs import is_unchanged

    unchanged = sum(1 for asset in summary.get("assets", []) if is_unchanged(asset))
    kept = f"{unchanged} unchanged, " if unchanged else ""
    print(
        f"{counts['ok']} loaded, {kept}{counts['skipped'] - unchanged} skipped, "
        f"{counts['failed']} failed -> lake {lake}"
    )
    for asset in summary.get("assets", []):
        if asset["status"] == "failed":
            print(f"  failed: {asset['asset_id']}: {one_line(asset.get('error'))}")
    return bool(counts["failed"])


def demo(lake: str, keep_server: bool) -> bool:
    """Ingest the synthetic dataset; return whether any input failed."""
    with prefect_backend(keep_server=keep_server) as backend:
        from spikelab.demo_data import kept_demo_dataset
        from spikelab.flows import ingest_files
        from spikelab.tasks import cache_dir

        inputs = kept_demo_dataset(cache_dir() / "demo")
        print(f"synthetic dataset in {inputs[0].parent}: {', '.join(p.name for p in inputs)}")
        (summary,) = _call_flow(ingest_files, backend, [str(p) for p in inputs], lake=lake)
    failed = print_run(summary, lake)
    lake_summary(lake)
    print(f"\nquery it: spikelab lake units --region CA1 --lake {lake}")
    return failed
