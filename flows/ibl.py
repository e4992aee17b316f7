"""Ingest the IBL Brain-Wide Map probes of a set of brain regions into the lake."""

from __future__ import annotations

from typing import Any

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from spikelab.flows._runs import (
    Outcome,
    collect,
    current_flow_run_id,
    finish_run,
    guarded,
    loaded_already,
    staged_or_reload,
)
from spikelab.io.lake import resolve_lake
from spikelab.loaders import LOADER_VERSIONS
from spikelab.tasks.ibl import load_ibl_probe, query_ibl_probes
from spikelab.tasks.load import Target
from spikelab.tasks.outputs import write_manifest, write_units_table

BWM_REVISION = "2024_Q2_IBL_et_al_BWM"  # the Brain-Wide Map release the units come from


@task(name="ingest-ibl-probe", task_run_name="ingest probe {probe[pid]}")
def ingest_ibl_probe(
    probe: dict[str, Any],
    lake: str,
    refresh: bool,
    one_cache_dir: str | None,
    units_table_path: str | None,
) -> Outcome:
    """Ingest one probe: skip if unchanged, load (cached), publish, manifest."""
    eid, pid = str(probe["eid"]), str(probe["pid"])
    target: Target = {"source": "ibl", "dataset_id": eid, "asset_id": pid}
    reference = f"https://openalyx.internationalbrainlab.org/insertions/{pid}"

    def work() -> tuple[str, dict[str, Any]]:
        content_id = f"ibl:{pid}:{BWM_REVISION}:v{LOADER_VERSIONS['ibl']}"
        existing = None if refresh else loaded_already(lake, target, content_id)
        if existing is not None:
            return "skipped", existing
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
        outputs = write_units_table(staged, lake, target)
        manifest = write_manifest(
            lake,
            target,
            status="ok",
            version=BWM_REVISION,
            source_reference=reference,
            input={"eid": eid, "pid": pid, "revision": BWM_REVISION, "content_id": content_id},
            outputs=outputs,
            staged=staged,
            flow_run_id=current_flow_run_id(),
        )
        return "ok", manifest

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
    lake = resolve_lake(lake)
    probes = query_ibl_probes(
        list(regions), min_units, min_fraction_in_target, one_cache_dir, units_table_path
    )
    if max_probes is not None:
        probes = probes[:max_probes]
    futures = ingest_ibl_probe.map(
        probes,
        lake=unmapped(lake),
        refresh=unmapped(refresh),
        one_cache_dir=unmapped(one_cache_dir),
        units_table_path=unmapped(units_table_path),
    )
    parameters = {
        "regions": list(regions),
        "min_units": min_units,
        "min_fraction_in_target": min_fraction_in_target,
        "max_probes": max_probes,
        "lake": lake,
        "refresh": refresh,
    }
    return finish_run(lake, "ingest-ibl-region", parameters, collect(futures, "probes"))  # type: ignore[return-value]
