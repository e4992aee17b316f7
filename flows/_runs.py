"""What every ingest flow does around its assets: outcomes, skip checks, the run summary."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State

from spikelab.io import storage
from spikelab.io.lake import Lake
from spikelab.io.manifest import read_manifest, write_manifest
from spikelab.tasks.load import StagedUnits, Target


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
    target: Target, status: str, started: float, manifest_path: str, manifest: dict[str, Any]
) -> Outcome:
    """Summarise one asset's result from its manifest."""
    summary = manifest.get("spikedata") or {}
    return {
        "asset_id": target["asset_id"],
        "dataset_id": target["dataset_id"],
        "status": status,
        "units": summary.get("N"),
        "spikes": summary.get("total_spikes"),
        "seconds": round(time.monotonic() - started, 3),
        "manifest": manifest_path,
        "error": manifest.get("error"),
    }


def guarded(
    lake: str,
    target: Target,
    work: Callable[[], tuple[str, dict[str, Any]]],
    **manifest_fields: Any,
) -> Outcome:
    """Run one asset's ``work``; any error becomes a ``failed`` manifest, never a crash.

    ``work`` returns the status (``ok`` or ``skipped``) and the asset's manifest.
    """
    started = time.monotonic()
    path = manifest_path(lake, target)
    try:
        status, manifest = work()
    except Exception as error:  # noqa: BLE001 - one bad asset must not stop the run
        message = f"{type(error).__name__}: {error}"
        get_run_logger().error(
            "%s failed: %s\n%s", target["asset_id"], message, traceback.format_exc(limit=3)
        )
        manifest = write_manifest(
            path,
            **target,
            status="failed",
            error=message,
            flow_run_id=current_flow_run_id(),
            **manifest_fields,
        )
        status = "failed"
    return outcome(target, status, started, path, manifest)


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
    """Write ``runs/<flow run id>.json`` and the Prefect artifacts; say how the run went."""
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
    return Completed(message=message, data=summary)
