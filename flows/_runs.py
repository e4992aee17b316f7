"""What every ingest flow does around its assets: outcomes, skip checks, the run summary.

A flow converts its ``lake`` parameter to a :class:`~spikelab.io.lake.Lake` once, reads the
lake's assets table once (:func:`known_assets`) to skip unchanged assets, runs one task
per asset that returns a ``skipped``/``failed`` outcome or a pending publication, and
hands the pending ones to :func:`spikelab.flows._publish.publish_results`, which commits
them to the units table in batches.

A flow run ends ``Completed`` when no asset failed and ``Failed`` otherwise, in both cases
after its summary (``<lake>/runs/<flow run id>.json``) and its Prefect artifacts are
written. Calling a flow whose run failed raises :class:`~spikelab.exceptions.IngestFailedError`
(its ``summary`` attribute holds the summary); callers that want the summary either way call
the flow with ``return_state=True`` and pass the state to :func:`run_summary`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice
from typing import Any, TypedDict

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_logger, get_run_logger
from prefect.logging.loggers import PrefectLogAdapter
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from spikelab.exceptions import IngestFailedError, LakeKeyConflictError
from spikelab.io import delta_lake, delta_upkeep, storage
from spikelab.io.delta_lake import AssetState
from spikelab.io.lake import Lake
from spikelab.io.manifest import record_failure
from spikelab.io.publish_journal import JOURNAL_FOLDER, repair_stale
from spikelab.tasks.load import StagedUnits, Target, one_line, remove_stale_staged
from spikelab.tasks.outputs import Pending, removal

ARTIFACT_ROWS = 500  # rows of a run's table artifact at most
_TEMPORARY_FOLDERS = ("manifests", "runs", JOURNAL_FOLDER)  # lake folders atomic_write writes


class Outcome(TypedDict):
    """How one asset went, as the run summary and the Prefect table artifact show it."""

    asset_id: str
    dataset_id: str
    status: str
    units: int | None
    spikes: int | None
    seconds: float
    manifest: str
    raster: str | None
    error: str | None


def current_flow_run_id() -> str:
    """The running flow's id (a fixed label outside a flow run)."""
    return str(flow_run.id or "no-flow-run")


def key_of(target: Target) -> tuple[str, str, str]:
    """An asset's key in the lake's tables: ``(source, dataset_id, asset_id)``."""
    return (target["source"], target["dataset_id"], target["asset_id"])


def manifest_path(lake: Lake, target: Target) -> str:
    """Where the lake keeps an asset's manifest."""
    return lake.manifest_path(*key_of(target))


def known_assets(lake: Lake, refresh: bool) -> dict[tuple[str, str, str], AssetState]:
    """What the lake holds, read once per run (one scan of its assets table).

    Empty when ``refresh`` is set: every asset is then loaded again.
    """
    return {} if refresh else delta_lake.assets_index(lake)


def is_current(state: AssetState | None, identity: str, *, field: str = "content_id") -> bool:
    """Tell whether the lake holds exactly this content for an asset: status ok, same id.

    ``field`` is the identity :func:`~spikelab.io.delta_lake.assets_index` compares:
    ``content_id`` (which includes the loader version) or ``listed_id``.
    """
    return (
        state is not None
        and state.status == "ok"
        and getattr(state, field) is not None
        and getattr(state, field) == identity
    )


def in_order(decided: Sequence[Any], ingested: Iterable[Any]) -> list[Any]:
    """The flow's decided outcomes with each gap (None) filled by the next task result."""
    results = iter(ingested)
    return [item if item is not None else next(results) for item in decided]


def skipped(lake: Lake, target: Target, started: float, known: AssetState | None) -> Outcome:
    """The ``skipped`` outcome of an asset the lake already holds (only the index is read)."""
    return outcome(
        target,
        "skipped",
        time.monotonic() - started,
        manifest_path(lake, target),
        {"spikedata": {"N": known.rows if known else None}},
        raster=lake.raster_path(*key_of(target)),
    )


def staged_or_reload(
    load: Callable[..., StagedUnits], refresh: bool, **parameters: Any
) -> StagedUnits:
    """Run a cached load task; a cached result whose staged files are gone is loaded again."""
    staged = load.with_options(refresh_cache=refresh)(**parameters)  # type: ignore[attr-defined]
    if not (storage.exists(staged["units_path"]) and storage.exists(staged["raster_path"])):
        staged = load.with_options(refresh_cache=True)(**parameters)  # type: ignore[attr-defined]
    return staged


def outcome(
    target: Target,
    status: str,
    seconds: float,
    manifest_path: str,
    manifest: dict[str, Any],
    *,
    error: str | None = None,
    raster: str | None = None,
) -> Outcome:
    """Summarise one asset's result from its manifest (``error`` overrides the manifest's)."""
    summary = manifest.get("spikedata") or {}
    return {
        "asset_id": target["asset_id"],
        "dataset_id": target["dataset_id"],
        "status": status,
        "units": summary.get("N"),
        "spikes": summary.get("total_spikes"),
        "seconds": round(seconds, 3),
        "manifest": manifest_path,
        "raster": raster,
        "error": error if error is not None else manifest.get("error"),
    }


def guarded(
    lake: Lake,
    target: Target,
    work: Callable[[float], Outcome | Pending],
    **manifest_fields: Any,
) -> Outcome | Pending:
    """Run one asset's ``work``; any error becomes a ``failed`` result, never a crash.

    ``work`` gets the time the asset started (``time.monotonic()``) and returns a
    ``skipped`` :data:`Outcome` or the :class:`~spikelab.tasks.outputs.Pending`
    publication for the flow's publisher. On an error, :func:`log_failure` logs it (one
    line on the console) and :func:`~spikelab.io.manifest.record_failure` records its
    one-line reason: beside the asset's last good publication when there is one (a
    ``failed`` outcome), else as a ``failed`` manifest, and then the returned ``Pending``
    removes the asset's rows and raster from the lake. A
    :class:`~spikelab.exceptions.LakeKeyConflictError` (the key holds another input) writes
    nothing there. A failed outcome counts no units or spikes.
    """
    started = time.monotonic()
    path = manifest_path(lake, target)
    try:
        return work(started)
    except Exception as error:  # noqa: BLE001 - one bad asset must not stop the run
        message = one_line(error)
        log_failure(get_run_logger(), "/".join(key_of(target)), message, error)
        seconds = time.monotonic() - started
        if isinstance(error, LakeKeyConflictError):
            return outcome(target, "failed", seconds, path, {}, error=message)
        manifest = record_failure(
            path,
            **target,
            error=message,
            flow_run_id=current_flow_run_id(),
            warnings=getattr(error, "load_warnings", None),
            **manifest_fields,
        )
        if manifest["status"] == "failed":
            return removal(target, manifest, seconds)
        return outcome(target, "failed", seconds, path, {}, error=message)


def log_failure(
    run_logger: logging.Logger | logging.LoggerAdapter[Any],
    label: str,
    message: str,
    error: BaseException,
) -> None:
    """Log a failed asset: one line for the console, its traceback for the Prefect log only.

    ``run_logger`` is the run's logger (from ``get_run_logger()``). The traceback goes
    through Prefect's ``prefect.extra`` logger, which sends to the Prefect API (the UI's
    run log) and not to the console; any other logger gets it at debug level.
    """
    run_logger.error("%s failed: %s", label, message)
    run_ids = dict(getattr(run_logger, "extra", None) or {})
    if not run_ids:  # not a run's logger: no Prefect log to send the traceback to
        run_logger.debug("%s failed", label, exc_info=error)
        return
    api_only = PrefectLogAdapter(get_logger("prefect.extra"), extra=run_ids)
    api_only.error("%s failed: %s", label, message, exc_info=error)


def remove_leftovers(lake: Lake) -> None:
    """Remove stale temporary files in the lake and stale staged files in the cache.

    Stale means untouched for an hour: younger files may belong to a run going on at the
    same time. Killed runs leave such files behind; every run's end removes them. Only the
    lake folders written through temporary files are searched (not ``raw/``, whose Zarr
    stores hold many small files).
    """
    removed = [
        *(
            leftover
            for folder in _TEMPORARY_FOLDERS
            for leftover in storage.remove_leftovers(storage.join(lake.root, folder))
        ),
        *map(str, remove_stale_staged()),
    ]
    if removed:
        get_run_logger().info("removed %d stale temporary or staged file(s)", len(removed))


def finish_killed_publications(lake: Lake) -> None:
    """Make good what killed runs left: unpublished rows, and unwritten rasters and manifests.

    Units rows that no assets row names go (a run killed between its two commits, see
    :func:`spikelab.io.delta_upkeep.remove_unpublished`); the rasters and manifests of assets
    a killed run committed are written. Only leftovers an hour old count: younger ones may
    belong to a run going on at the same time (see :mod:`spikelab.io.publish_journal`). A
    failure here is logged, not raised: it concerns an earlier run, and the next run tries
    again.
    """
    try:
        removed = delta_upkeep.remove_unpublished(lake)
        repaired = repair_stale(lake)
    except Exception as error:  # noqa: BLE001 - this run's own assets have landed
        get_run_logger().warning(
            "could not finish a killed run's publications: %s", one_line(error)
        )
        return
    if removed:
        get_run_logger().warning(
            "removed the units rows of %d publication(s) a killed or refused run left", removed
        )
    if repaired:
        get_run_logger().warning(
            "wrote the raster and manifest of %d asset(s) a killed run had committed: %s",
            len(repaired),
            ", ".join("/".join(key) for key in repaired),
        )


def artifact_rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """The rows of the run's table artifact: failed assets first, then the others.

    Assets skipped as unchanged say nothing new and are left out; at most
    ``ARTIFACT_ROWS`` rows are kept, so the Prefect database and the UI's table stay
    small however large the run (the run summary in the lake lists every asset).
    """
    failed = [o for o in outcomes if o["status"] == "failed"]
    others = (o for o in outcomes if o["status"] != "failed" and not is_unchanged(o))
    return [dict(o) for o in islice(chain(failed, others), ARTIFACT_ROWS)]


def is_unchanged(result: Outcome) -> bool:
    """Whether an asset was skipped because the lake already holds it as it is."""
    return result["status"] == "skipped" and not result.get("error")


def finish_run(
    lake: Lake, flow_name: str, parameters: dict[str, Any], outcomes: Sequence[Outcome]
) -> State:
    """Write ``runs/<flow run id>.json`` and the Prefect artifacts; say how the run went.

    Returns
    -------
    State
        ``Completed`` with the summary, or ``Failed`` when any asset failed (see
        :func:`run_state`). The work killed runs left is finished and their stale
        leftovers are removed first.
    """
    finish_killed_publications(lake)
    remove_leftovers(lake)
    counts = {
        status: sum(o["status"] == status for o in outcomes)
        for status in ("ok", "skipped", "failed")
    }
    run_id = current_flow_run_id()
    summary = {
        "flow": flow_name,
        "flow_run_id": run_id,
        "parameters": parameters,
        "counts": counts,
        "assets": list(outcomes),
    }
    storage.put_bytes(lake.run_path(run_id), summary_json(summary))
    message = f"{counts['ok']} loaded, {counts['skipped']} skipped, {counts['failed']} failed"
    rows = artifact_rows(outcomes)
    if rows:
        create_table_artifact(
            rows, key=f"{flow_name}-assets", description=f"Per-asset outcomes of {flow_name}"
        )
    shown = (
        f"The table lists {len(rows)} of the {len(outcomes)} assets (failed first; unchanged "
        f"ones left out); every asset is in `{lake.run_path(run_id)}`.\n"
        if len(rows) < len(outcomes)
        else ""
    )
    create_markdown_artifact(
        f"## {flow_name}\n\n{message}\n\nLake: `{lake.root}`\n\n{shown}",
        key=f"{flow_name}-summary",
        description=message,
    )
    get_run_logger().info("%s: %s (summary in %s)", flow_name, message, lake.run_path(run_id))
    return run_state(message, summary, failed=counts["failed"] > 0)


def summary_json(summary: dict[str, Any]) -> bytes:
    """The run summary as indented JSON text, one asset a line.

    Each asset is encoded by the json module's C encoder: indenting the whole summary goes
    through its pure-Python encoder instead, whose pieces are all held until they are
    joined (for 10,000 assets, 21 MB at once for 4 MB of text; this way, 11 MB).
    """
    rest = {key: value for key, value in summary.items() if key != "assets"}
    head, _, tail = json.dumps({**rest, "assets": []}, indent=2).rpartition("[]")
    assets = ",\n    ".join(map(json.dumps, summary["assets"]))
    return (head + (f"[\n    {assets}\n  ]" if assets else "[]") + tail).encode()


def run_state(message: str, summary: Any, *, failed: bool) -> State:
    """The final state of an ingest flow run that carries ``summary``.

    ``Completed(data=summary)``, or, when ``failed``, ``Failed`` whose data is an
    :class:`~spikelab.exceptions.IngestFailedError` holding ``summary`` (so Prefect, the
    UI and automations see a failed run, and calling the flow raises that error).
    """
    if failed:
        return Failed(message=message, data=IngestFailedError(message, summary))
    return Completed(message=message, data=summary)


def run_summary(state: State) -> Any:
    """The summary of a finished ingest flow run, from its final state.

    Call a flow with ``return_state=True`` and pass its state here to get the summary
    whether the run completed or failed (the dict the flow returns: ``flow``,
    ``flow_run_id``, ``parameters``, ``counts``, ``assets``).

    Raises
    ------
    Exception
        The run's own error when it failed for another reason than failed assets (a bad
        parameter, a crash): there is no summary then.
    """
    result = state.result(raise_on_failure=False)
    if isinstance(result, IngestFailedError):
        return result.summary
    if isinstance(result, BaseException):
        raise result
    return result
