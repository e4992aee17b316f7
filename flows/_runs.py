"""What every ingest flow does around its assets: outcomes, skip checks, the run summary.

A flow run ends ``Completed`` when no asset failed and ``Failed`` otherwise, in both cases
after its summary (``<lake>/runs/<flow run id>.json``) and its Prefect artifacts are
written. Calling a flow whose run failed raises :class:`~spikelab.exceptions.IngestFailedError`
(its ``summary`` attribute holds the summary); callers that want the summary either way call
the flow with ``return_state=True`` and pass the state to :func:`run_summary`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.logging import get_logger, get_run_logger
from prefect.logging.loggers import PrefectLogAdapter
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from spikelab.exceptions import IngestFailedError, LakeKeyConflictError
from spikelab.io import storage
from spikelab.io.lake import Lake
from spikelab.io.manifest import read_manifest, record_failure
from spikelab.tasks.load import StagedUnits, Target, one_line, remove_stale_staged

_TEMPORARY_FOLDERS = ("units", "manifests", "runs")  # lake folders written by atomic_write


class Outcome(TypedDict):
    """How one asset went, as the run summary and the Prefect table artifact show it."""

    asset_id: str
    dataset_id: str
    status: str
    units: int | None
    spikes: int | None
    seconds: float
    manifest: str
    error: str | None


def current_flow_run_id() -> str:
    """The running flow's id (a fixed label outside a flow run)."""
    return str(flow_run.id or "no-flow-run")


def manifest_path(lake: str, target: Target) -> str:
    """Where the lake keeps an asset's manifest."""
    return Lake(lake).manifest_path(target["source"], target["dataset_id"], target["asset_id"])


def loaded_already(
    lake: str, target: Target, content_id: str, *, field: str = "content_id"
) -> dict[str, Any] | None:
    """The asset's manifest when the lake already holds this exact content, else None.

    Exact means: status ok, the same ``content_id`` (which includes the loader version) in
    the manifest's input ``field``, and every output file still there.
    """
    path = manifest_path(lake, target)
    if not storage.exists(path):
        return None
    manifest = read_manifest(path)
    if manifest.get("status") != "ok" or manifest.get("input", {}).get(field) != content_id:
        return None
    if not all(storage.exists(output["path"]) for output in manifest.get("outputs", [])):
        return None
    return manifest


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
    started: float,
    manifest_path: str,
    manifest: dict[str, Any],
    *,
    error: str | None = None,
) -> Outcome:
    """Summarise one asset's result from its manifest (``error`` overrides the manifest's)."""
    summary = manifest.get("spikedata") or {}
    return {
        "asset_id": target["asset_id"],
        "dataset_id": target["dataset_id"],
        "status": status,
        "units": summary.get("N"),
        "spikes": summary.get("total_spikes"),
        "seconds": round(time.monotonic() - started, 3),
        "manifest": manifest_path,
        "error": error if error is not None else manifest.get("error"),
    }


def guarded(
    lake: str,
    target: Target,
    work: Callable[[], tuple[str, dict[str, Any]]],
    **manifest_fields: Any,
) -> Outcome:
    """Run one asset's ``work``; any error becomes a ``failed`` outcome, never a crash.

    ``work`` returns the status (``ok`` or ``skipped``) and the asset's manifest. On an
    error, :func:`log_failure` logs it (one line on the console) and
    :func:`~spikelab.io.manifest.record_failure` records its one-line reason: beside the
    asset's last good publication when there is one, else as a ``failed`` manifest, whose
    asset then has no units table or raster in the lake. A
    :class:`~spikelab.exceptions.LakeKeyConflictError` (the key holds another input) writes
    nothing there. A failed outcome counts no units or spikes.
    """
    started = time.monotonic()
    path = manifest_path(lake, target)
    try:
        status, manifest = work()
    except Exception as error:  # noqa: BLE001 - one bad asset must not stop the run
        message = one_line(error)
        log_failure(f"{target['source']}/{target['dataset_id']}/{target['asset_id']}", message)
        if isinstance(error, LakeKeyConflictError):
            return outcome(target, "failed", started, path, {}, error=message)
        manifest = record_failure(
            path,
            **target,
            error=message,
            flow_run_id=current_flow_run_id(),
            warnings=getattr(error, "load_warnings", None),
            **manifest_fields,
        )
        if manifest["status"] == "failed":
            drop_outputs(lake, target)
        return outcome(target, "failed", started, path, {}, error=message)
    return outcome(target, status, started, path, manifest)


def log_failure(label: str, message: str) -> None:
    """Log a failed asset: one line for the console, its traceback for the Prefect log only.

    Call it while handling the error. The traceback goes through Prefect's
    ``prefect.extra`` logger, which sends to the Prefect API (the UI's run log) and not
    to the console.
    """
    run_logger = get_run_logger()
    run_logger.error("%s failed: %s", label, message)
    run_ids = dict(getattr(run_logger, "extra", None) or {})
    api_only = PrefectLogAdapter(get_logger("prefect.extra"), extra=run_ids)
    api_only.error("%s failed: %s", label, message, exc_info=True)


def drop_outputs(lake: str, target: Target) -> None:
    """Remove an asset's units table and raster plot from the lake (if there)."""
    where = Lake(lake)
    key = (target["source"], target["dataset_id"], target["asset_id"])
    storage.remove(where.units_path(*key))
    storage.remove(where.raster_path(*key))


def remove_leftovers(lake: str) -> None:
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
            for leftover in storage.remove_leftovers(storage.join(lake, folder))
        ),
        *map(str, remove_stale_staged()),
    ]
    if removed:
        get_run_logger().info("removed %d stale temporary or staged file(s)", len(removed))


def collect(futures: Sequence[Any], label: str) -> list[Outcome]:
    """Wait for every asset's outcome, with a progress bar on a terminal."""
    from tqdm import tqdm

    with tqdm(total=len(futures), desc=label, unit="asset", disable=None, leave=False) as bar:
        for _ in as_completed(list(futures)):
            bar.update()
    return [future.result() for future in futures]


def finish_run(
    lake: str, flow_name: str, parameters: dict[str, Any], outcomes: Sequence[Outcome]
) -> State:
    """Write ``runs/<flow run id>.json`` and the Prefect artifacts; say how the run went.

    Returns
    -------
    State
        ``Completed`` with the summary, or ``Failed`` when any asset failed (see
        :func:`run_state`). The lake's stale leftovers are removed first.
    """
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
    storage.put_bytes(Lake(lake).run_path(run_id), json.dumps(summary, indent=2).encode())
    message = f"{counts['ok']} loaded, {counts['skipped']} skipped, {counts['failed']} failed"
    if outcomes:
        create_table_artifact(
            [dict(o) for o in outcomes],
            key=f"{flow_name}-assets",
            description=f"Per-asset outcomes of {flow_name}",
        )
    create_markdown_artifact(
        f"## {flow_name}\n\n{message}\n\nLake: `{lake}`\n",
        key=f"{flow_name}-summary",
        description=message,
    )
    get_run_logger().info("%s: %s (summary in %s)", flow_name, message, Lake(lake).run_path(run_id))
    return run_state(message, summary, failed=counts["failed"] > 0)


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
