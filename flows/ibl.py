"""Ingest the IBL Brain-Wide Map probes of a set of brain regions into the lake."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.flows._publish import publish_results
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    finish_run,
    guarded,
    in_order,
    is_current,
    key_of,
    known_assets,
    skipped,
    staged_or_reload,
)
from spikelab.io.lake import Lake
from spikelab.loaders import LOADER_VERSIONS
from spikelab.loaders.ibl import DEFAULT_TAG, OPENALYX_URL
from spikelab.tasks.ibl import load_ibl_probe, query_ibl_probes
from spikelab.tasks.load import Target, read_staged
from spikelab.tasks.outputs import Pending, prepare_publication

BWM_REVISION = DEFAULT_TAG  # the Brain-Wide Map release the units come from


def probe_target(probe: dict[str, Any]) -> Target:
    """Where a probe's outputs go in the lake."""
    return {"source": "ibl", "dataset_id": str(probe["eid"]), "asset_id": str(probe["pid"])}


def probe_content_id(pid: str) -> str:
    """What the lake must hold to skip a probe: its pid, the release and the loader version."""
    return f"ibl:{pid}:{BWM_REVISION}:v{LOADER_VERSIONS['ibl']}"


@task(name="ingest-ibl-probe", task_run_name="ingest probe {probe[pid]}")
def ingest_ibl_probe(
    probe: dict[str, Any],
    lake: Lake,
    refresh: bool,
    one_cache_dir: str | None,
    units_table_path: str | None,
) -> Outcome | Pending:
    """Ingest one probe: load (cached), and hand it back as a pending publication."""
    target = probe_target(probe)
    eid, pid = target["dataset_id"], target["asset_id"]
    reference = f"{OPENALYX_URL}/insertions/{pid}"

    def work(started: float) -> Pending:
        content_id = probe_content_id(pid)
        staged = staged_or_reload(
            load_ibl_probe,
            refresh,
            eid=eid,
            pid=pid,
            target=target,
            content_id=content_id,
            one_cache_dir=one_cache_dir,
            units_table_path=units_table_path,
        )
        return prepare_publication(
            target,
            read_staged(staged),
            seconds=time.monotonic() - started,
            version=BWM_REVISION,
            source_reference=reference,
            input={"eid": eid, "pid": pid, "revision": BWM_REVISION, "content_id": content_id},
            flow_run_id=current_flow_run_id(),
        )

    return guarded(lake, target, work, version=BWM_REVISION, source_reference=reference)


@flow(name="ingest-ibl-region", task_runner=ThreadPoolTaskRunner(max_workers=2))  # type: ignore[arg-type]
def ingest_ibl_region(
    regions: list[str],
    min_units: int = 0,
    min_fraction_in_target: float = 0.0,
    max_probes: int | None = None,
    lake: str | None = None,
    refresh: bool = False,
    one_cache_dir: str | None = None,
    units_table_path: str | None = None,
) -> dict[str, Any]:
    """Ingest the Brain-Wide Map probes with good units in ``regions``.

    Parameters
    ----------
    regions : list of str
        Beryl acronyms, e.g. ``["MOs", "MOp"]``.
    min_units : int, default: 0
        Good units a probe needs.
    min_fraction_in_target : float, default: 0.0
        Fraction of a probe's good units that must lie in ``regions``.
    max_probes : int | None, default: None
        Ingest at most this many probes (those with the most good units).
    lake : str | None, default: None
        Lake root: a folder (made absolute before anything is recorded) or an ``s3://``
        URL. None: ``$SPIKELAB_LAKE``, else ``./spikelab-lake``.
    refresh : bool, default: False
        Load everything again, even probes already in the lake.
    one_cache_dir : str | None, default: None
        Use ONE in local mode on this cache folder instead of the public server.
    units_table_path : str | None, default: None
        A ready Brain-Wide Map units table (Parquet) instead of the published one.

    Returns
    -------
    dict
        The run summary; probes land under ``source=ibl``, ``dataset=<eid>``. When any
        probe failed, the run ends ``Failed`` and calling the flow raises
        :class:`~spikelab.exceptions.IngestFailedError`; call it with
        ``return_state=True`` and use :func:`spikelab.flows.run_summary` to get the
        summary either way.
    """
    where = Lake(lake)
    probes = query_ibl_probes(
        list(regions), min_units, min_fraction_in_target, one_cache_dir, units_table_path
    )
    if max_probes is not None:
        probes = probes[:max_probes]
    index = known_assets(where, refresh)
    started = time.monotonic()
    targets = [probe_target(p) for p in probes]
    known = [index.get(key_of(target)) for target in targets]
    items: list[Any] = [  # unchanged probes cost no task run
        skipped(where, target, started, state)
        if is_current(state, probe_content_id(target["asset_id"]))
        else None
        for target, state in zip(targets, known, strict=True)
    ]
    changed = [p for p, item in zip(probes, items, strict=True) if item is None]
    items = in_order(
        items,
        ingest_ibl_probe.map(
            changed,
            lake=unmapped(where),
            refresh=unmapped(refresh),
            one_cache_dir=unmapped(one_cache_dir),
            units_table_path=unmapped(units_table_path),
        ),
    )
    parameters = {
        "regions": list(regions),
        "min_units": min_units,
        "min_fraction_in_target": min_fraction_in_target,
        "max_probes": max_probes,
        "lake": where.root,
        "refresh": refresh,
    }
    outcomes = publish_results(where, items, "probes")
    return finish_run(where, "ingest-ibl-region", parameters, outcomes)  # type: ignore[return-value]
