"""The ``spikelab`` command: ingest into the lake, ask it questions, run the demo, serve.

Light commands (``--help``, ``lake …``, ``server …``) import neither Prefect nor the
format libraries; commands that run a flow start (or find) a Prefect server first and import
their flows while it comes up.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from spikelab.cli._panics import follow_on_panics_dropped
from spikelab.cli.flow_runs import (
    FlowRunError,
    demo,
    nightly_config,
    print_run,
    run_ingest,
    summaries_of,
)
from spikelab.cli.lake import answer
from spikelab.cli.parser import (
    DEFAULT_RETENTION_HOURS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    build_parser,
    cli_words,
    one_line,
)
from spikelab.cli.serving import serve, server_command

# A new PREFECT_HOME makes a Prefect server take ~20 s to start: Prefect's default limit.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",  # progress bars and a summary say what happens
}
# Commands that may write Delta tables (delta-rs): their stderr drops follow-on panics.
_WRITING_COMMANDS = frozenset({"ingest", "demo", "lake"})
__all__ = [
    "DEFAULT_RETENTION_HOURS",
    "FlowRunError",
    "build_parser",
    "cli_words",
    "main",
    "nightly_config",
    "run",
    "summaries_of",
]


def _check_lake(lake: str) -> None:
    if "://" not in lake and Path(lake).exists() and not Path(lake).is_dir():
        raise UsageError(f"--lake {lake} is a file, not a folder")


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command; return the exit status."""
    if hasattr(args, "lake"):
        from spikelab.io.lake import resolve_lake

        args.lake = resolve_lake(args.lake)  # absolute before anything is recorded
        _check_lake(args.lake)
    if args.command == "ingest":
        failed = [print_run(summary, args.lake) for summary in run_ingest(args)]
        return EXIT_FAILED if any(failed) else EXIT_OK
    if args.command == "lake":
        answer(args)
    elif args.command == "demo":
        return EXIT_FAILED if demo(args.lake, args.keep_server) else EXIT_OK
    elif args.command == "server":
        return server_command(args.action, getattr(args, "port", None))
    else:
        serve()
    return EXIT_OK


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


def _failure_line(error: Exception) -> str:
    """One line for an unexpected failure; a remote service's own message as it stands.

    ``cannot reach api.dandiarchive.org: ...`` says everything: neither the flow run that
    carried it nor the class name is shown then.
    """
    from spikelab.exceptions import RemoteError

    cause = error.__cause__ if isinstance(error, FlowRunError) else error
    if isinstance(cause, RemoteError):
        return one_line(str(cause))
    return f"{type(error).__name__}: {one_line(str(error))}"


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 some input failed, 2 usage)."""
    from spikelab.exceptions import PrefectServerError, ServerPortInUseError

    args = build_parser().parse_args(argv)
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        if args.command not in _WRITING_COMMANDS:
            return _dispatch(args)
        with follow_on_panics_dropped():  # a full disk: one line, not a dozen Rust panics
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
        print(f"spikelab: error: {_failure_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def main() -> None:
    """Console-script entry point."""
    status = run()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(status)
