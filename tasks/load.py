"""Loading an asset into what its publication needs: a units table and a raster, in memory.

Local files and DANDI assets are loaded inside their flow's task run
(:func:`load_and_prepare`: data in, data out, nothing written before publishing); the
lake's assets table, not a Prefect cache, decides what is loaded again. IBL probes still
go through a cached task that stages the units table and raster locally
(:func:`load_and_stage`). The CPU-bound part (units table, raster) of at most
:func:`spikelab.cores.cpu_slots` assets runs at once, however many are being read.
Warnings raised while an input is loaded are counted into its result (and so its
manifest), and logged once.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from prefect.logging import get_run_logger

from spikelab.cores import cpu_slots
from spikelab.io.atomic import STALE_AFTER_SECONDS, remove_older_than
from spikelab.io.json_codec import to_plain
from spikelab.io.manifest import spikedata_summary
from spikelab.io.raster_plot import raster_png, write_raster_png
from spikelab.io.units_table import skipped_columns, units_arrow_table, write_units_table
from spikelab.spikedata import SpikeData
from spikelab.tasks._policy import cache_dir

_LOGGED_MESSAGE_LENGTH = 300
_Result = TypeVar("_Result", "StagedUnits", "Loaded")


class Target(TypedDict):
    """Where an asset goes in the lake."""

    source: str
    dataset_id: str
    asset_id: str


class StagedUnits(TypedDict):
    """A loaded asset, staged locally and ready to publish into the lake.

    ``warnings`` counts the warnings raised while loading (``{message: count}``);
    ``skipped_columns`` lists the attributes the units table left out (``{name: reason}``).
    """

    units_path: str
    raster_path: str
    spikedata: dict[str, Any]
    metadata: dict[str, Any]
    warnings: dict[str, int]
    skipped_columns: dict[str, str]


class Loaded(TypedDict):
    """A loaded asset in memory, ready to publish: its units table and raster PNG.

    The other fields are those of :class:`StagedUnits`.
    """

    units: pa.Table
    raster: bytes
    spikedata: dict[str, Any]
    metadata: dict[str, Any]
    warnings: dict[str, int]
    skipped_columns: dict[str, str]


_CPU = threading.BoundedSemaphore(cpu_slots())  # CPU-bound steps running at once
_collectors: dict[int, Counter[str]] = {}
_collectors_lock = threading.Lock()
_saved_state: list[warnings.catch_warnings] = []


def _count_or_show(
    show: Callable[..., None],
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Count a warning for the thread collecting it, or show it as before."""
    counts = _collectors.get(threading.get_ident())
    if counts is None:
        show(message, category, filename, lineno, file, line)
    else:
        counts[str(message)] += 1


@contextmanager
def counted_warnings() -> Iterator[Counter[str]]:
    """Count, by message, the warnings this thread raises in the block instead of showing them.

    Python keeps one warnings state per process, while loads run in threads side by side:
    the first collector saves that state, lets every warning through and routes each one to
    the collector of the thread that raised it (warnings of other threads are shown as
    usual); the last collector restores the state. Not re-entrant within one thread.

    Yields
    ------
    collections.Counter
        ``{message: count}``, filled as the block runs.
    """
    counts: Counter[str] = Counter()
    thread = threading.get_ident()
    with _collectors_lock:
        if not _collectors:
            state = warnings.catch_warnings()
            state.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = partial(_count_or_show, warnings.showwarning)
            _saved_state.append(state)
        _collectors[thread] = counts
    try:
        yield counts
    finally:
        with _collectors_lock:
            del _collectors[thread]
            if not _collectors:
                _saved_state.pop().__exit__(None, None, None)


def log_warnings(label: str, counts: Counter[str]) -> None:
    """Log an input's warnings once, as one line with each message and its count."""
    if not counts:
        return
    listed = "; ".join(
        f"{message[:_LOGGED_MESSAGE_LENGTH]} (x{count})" for message, count in counts.most_common()
    )
    get_run_logger().warning(
        "%s: %d warning(s) while loading, counted in its manifest: %s",
        label,
        counts.total(),
        listed,
    )


def stage(sd: SpikeData, target: Target) -> StagedUnits:
    """Write ``sd``'s units table and raster plot into the local staging area."""
    folder = staging_dir()
    name = uuid.uuid4().hex
    units = write_units_table(sd, folder / f"{name}.parquet", **target)
    raster = write_raster_png(
        sd,
        folder / f"{name}.png",
        title=f"{target['source']} {target['dataset_id']} {target['asset_id']}",
    )
    return {
        "units_path": units["path"],
        "raster_path": raster,
        "spikedata": spikedata_summary(sd),
        "metadata": to_plain(sd.metadata),
        "warnings": {},
        "skipped_columns": dict(units.get("skipped_columns") or {}),
    }


def prepare(sd: SpikeData, target: Target) -> Loaded:
    """Build ``sd``'s units table and raster plot in memory (nothing is written).

    At most :func:`spikelab.cores.cpu_slots` calls run at once in a process.
    """
    with _CPU:
        units = units_arrow_table(sd, **target)
        raster = raster_png(
            sd, title=f"{target['source']} {target['dataset_id']} {target['asset_id']}"
        )
        return {
            "units": units,
            "raster": raster,
            "spikedata": spikedata_summary(sd),
            "metadata": to_plain(sd.metadata),
            "warnings": {},
            "skipped_columns": skipped_columns(units),
        }


def read_staged(staged: StagedUnits) -> Loaded:
    """Read a staged asset back into memory and remove its staged files.

    A later cache hit on the removed files loads the asset again (see
    :func:`spikelab.flows._runs.staged_or_reload`).
    """
    loaded: Loaded = {
        "units": pq.read_table(staged["units_path"]),
        "raster": Path(staged["raster_path"]).read_bytes(),
        "spikedata": staged["spikedata"],
        "metadata": staged["metadata"],
        "warnings": dict(staged.get("warnings") or {}),
        "skipped_columns": dict(staged.get("skipped_columns") or {}),
    }
    for staged_file in (staged["units_path"], staged["raster_path"]):
        Path(staged_file).unlink(missing_ok=True)
    return loaded


def load_and_stage(target: Target, load: Callable[[], SpikeData]) -> StagedUnits:
    """Run ``load``, then :func:`stage` its result, counting the warnings both raise.

    The counts go into the staged result and are logged once. When loading fails, they
    are attached to the error as ``load_warnings`` so the failure record keeps them too.
    """
    return _counting_warnings(target, lambda: stage(load(), target))


def load_and_prepare(target: Target, load: Callable[[], SpikeData]) -> Loaded:
    """Run ``load``, then :func:`prepare` its result in memory, counting warnings the same way."""
    return _counting_warnings(target, lambda: prepare(load(), target))


def _counting_warnings(target: Target, work: Callable[[], _Result]) -> _Result:
    label = f"{target['source']}/{target['dataset_id']}/{target['asset_id']}"
    with counted_warnings() as counts:
        try:
            result = work()
        except Exception as error:
            error.load_warnings = dict(counts)  # type: ignore[attr-defined]
            raise
    log_warnings(label, counts)
    result["warnings"] = dict(counts)
    return result


def one_line(error: BaseException) -> str:
    """An error as one line of text Prefect can send: ``Type: message``.

    Line breaks become spaces, and characters that are not valid Unicode (a file name
    that is not UTF-8) are written as backslash escapes.
    """
    text = " ".join(f"{type(error).__name__}: {error}".splitlines())
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def staging_dir() -> Path:
    """Where loaded assets wait to be published: ``<cache>/staged``."""
    folder = cache_dir() / "staged"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_stale_staged(*, older_than_seconds: float = STALE_AFTER_SECONDS) -> list[Path]:
    """Remove staged files (and their temporaries) untouched for ``older_than_seconds``.

    A published asset's staged files are removed when it is published; those left by a
    run that was killed or failed before publishing are removed by a later run. Younger
    files may belong to a run going on at the same time and are kept.

    Returns
    -------
    list of Path
        The files removed.
    """
    staged = (path for path in staging_dir().iterdir() if path.is_file())
    return remove_older_than(staged, older_than_seconds)
