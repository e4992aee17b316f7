"""Questions users ask the lake: what is in it, and which units match."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from spikelab.io.lake import connect

UNIT_COLUMNS = (
    "source",
    "dataset",
    "asset_id",
    "unit_id",
    "location_label",
    "firing_rate_hz",
    "n_spikes",
    "electrode",
    "location_x",
    "location_y",
    "location_z",
)


def lake_summary(lake: str | os.PathLike[str]) -> pd.DataFrame:
    """Assets, units and spikes per source and dataset."""
    return (
        connect(lake)
        .execute(
            "SELECT source, dataset, count(DISTINCT asset_id) AS assets, count(*) AS units, "
            "CAST(sum(n_spikes) AS BIGINT) AS spikes FROM units "
            "GROUP BY source, dataset ORDER BY source, dataset"
        )
        .df()
    )


def find_units(
    lake: str | os.PathLike[str],
    *,
    regions: Sequence[str] = (),
    source: str | None = None,
    dataset: str | None = None,
    min_rate_hz: float | None = None,
    with_spike_times: bool = False,
) -> pd.DataFrame:
    """Units across every source that match all the filters given.

    Parameters
    ----------
    lake : str or PathLike
        Lake root.
    regions : sequence of str, default: ()
        Brain-region acronyms; a unit matches when its ``location_label`` is one of them
        exactly.
    source, dataset : str | None, default: None
        Keep one source (``dandi``, ``ibl``, ``files``) or one dataset id.
    min_rate_hz : float | None, default: None
        Keep units firing at least this fast.
    with_spike_times : bool, default: False
        Also return each unit's ``spike_times_ms``.

    Returns
    -------
    pandas.DataFrame
        One row per unit, ordered by source, dataset, asset and unit index.
    """
    conditions: list[str] = []
    parameters: list[str | float] = []
    if regions:
        conditions.append(f"location_label IN ({', '.join('?' for _ in regions)})")
        parameters.extend(regions)
    for column, value in (("source", source), ("dataset", dataset)):
        if value is not None:
            conditions.append(f"{column} = ?")
            parameters.append(value)
    if min_rate_hz is not None:
        conditions.append("firing_rate_hz >= ?")
        parameters.append(min_rate_hz)
    connection = connect(lake)
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
    if "unit_index" not in available:  # an empty lake
        return pd.DataFrame(columns=list(UNIT_COLUMNS))
    columns = [c for c in UNIT_COLUMNS if c in available]
    if with_spike_times:
        columns.append("spike_times_ms")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    query = (
        f"SELECT {', '.join(columns)} FROM units{where} "
        "ORDER BY source, dataset, asset_id, unit_index"
    )
    frame: Any = connection.execute(query, parameters).df()
    return frame
