"""Prefect tasks for IBL: query Brain-Wide Map probes, load one probe (cached by pid)."""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

import pandas as pd
from prefect import task

from spikelab.tasks._policy import NETWORK_RETRIES, content_cache_key, retry_unless_client_error
from spikelab.tasks.load import StagedUnits, Target, load_and_stage


@lru_cache(maxsize=4)
def ibl_session(
    one_cache_dir: str | None, units_table_path: str | None
) -> tuple[Any, pd.DataFrame]:
    """One ONE instance and one Brain-Wide Map units table per process, reused by every task.

    ``one_cache_dir`` opens ONE in local mode on that cache (None: the public server);
    ``units_table_path`` reads a ready units table (None: the published one).
    """
    from spikelab.loaders.ibl import bwm_units, default_one

    if one_cache_dir is None:
        one = default_one()
    else:
        from one.api import ONE

        one = ONE(mode="local", cache_dir=one_cache_dir)
    table = pd.read_parquet(units_table_path) if units_table_path else bwm_units(one)
    return one, table


@task(name="query-ibl-probes", **NETWORK_RETRIES, retry_condition_fn=retry_unless_client_error)
def query_ibl_probes(
    regions: list[str],
    min_units: int,
    min_fraction_in_target: float,
    one_cache_dir: str | None,
    units_table_path: str | None,
) -> list[dict[str, Any]]:
    """The matching probes as records (eid, pid, n_good_units, ...), most good units first."""
    from spikelab.loaders.ibl import query_ibl_probes as query

    one, table = ibl_session(one_cache_dir, units_table_path)
    _, stats = query(
        regions,
        min_units=min_units,
        min_fraction_in_target=min_fraction_in_target,
        one=one,
        units_table=table,
    )
    records: list[dict[str, Any]] = stats.astype(object).to_dict("records")
    return records


@task(
    name="load-ibl-probe",
    cache_key_fn=content_cache_key("ibl"),
    persist_result=True,
    **NETWORK_RETRIES,
    retry_condition_fn=retry_unless_client_error,
)
def load_ibl_probe(
    eid: str,
    pid: str,
    target: Target,
    content_id: str,
    one_cache_dir: str | None,
    units_table_path: str | None,
) -> StagedUnits:
    """Load one probe's good units, trials and metadata."""
    from spikelab.loaders.ibl import load_spikedata_from_ibl

    one, table = ibl_session(one_cache_dir, units_table_path)
    return load_and_stage(
        target, partial(load_spikedata_from_ibl, eid, pid, one=one, units_table=table)
    )
