"""Questions users ask the lake: what is in it, and which units match."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from spikelab.io import storage
from spikelab.io.lake import Lake, connect

if TYPE_CHECKING:  # pandas takes ~0.25 s to import: CSV and Parquet answers skip it
    import pandas as pd

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


SUMMARY_COLUMNS = ("source", "dataset", "assets", "units", "spikes")


SummaryRow = tuple[str, str, int, int, int]


def lake_summary(lake: str | os.PathLike[str]) -> pd.DataFrame:
    """Assets, units and spikes per source and dataset (see :func:`summary_rows`)."""
    import pandas as pd

    return pd.DataFrame(summary_rows(lake), columns=list(SUMMARY_COLUMNS)).astype(
        {"assets": "int64", "units": "int64", "spikes": "int64"}
    )


def summary_rows(lake: str | os.PathLike[str]) -> list[SummaryRow]:
    """(source, dataset, assets, units, spikes) per source and dataset, sorted.

    An asset that loaded with no units has no rows in the units table; it is counted from
    its manifest (status ``ok``, ``N`` = 0). An empty or missing lake gives no rows.
    """
    connection = connect(lake)
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
    counts: dict[tuple[str, str], list[int]] = {}
    if "asset_id" in available:
        for source, dataset, assets, units, spikes in connection.execute(
            "SELECT source, dataset, count(DISTINCT asset_id), count(*), "
            "CAST(coalesce(sum(n_spikes), 0) AS BIGINT) FROM units GROUP BY source, dataset"
        ).fetchall():
            counts[(source, dataset)] = [assets, units, spikes]
    for source, dataset in _empty_assets(lake):
        counts.setdefault((source, dataset), [0, 0, 0])[0] += 1
    return [(source, dataset, a, u, n) for (source, dataset), (a, u, n) in sorted(counts.items())]


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows as a plain text table, columns right-aligned under their names."""
    cells = [[str(c) for c in columns], *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        " ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


def _empty_assets(lake: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(source, dataset) of every asset whose manifest says it loaded with 0 units.

    The pair is read from the manifest's partition folders, so it matches the units table's
    ``source`` and ``dataset`` columns.
    """
    found = []
    for path in Lake(lake).manifest_files():
        try:
            manifest = json.loads(storage.get_bytes(path))
        except ValueError:
            continue  # a manifest being written, or not one of ours: nothing to count
        if manifest.get("status") != "ok" or (manifest.get("spikedata") or {}).get("N") != 0:
            continue
        source, dataset = path.replace("\\", "/").split("/")[-3:-1]
        if source.startswith("source=") and dataset.startswith("dataset="):
            found.append((source.removeprefix("source="), dataset.removeprefix("dataset=")))
    return found


def _literal(value: str | float) -> str:
    """A SQL literal: numbers as they are, text quoted with quotes doubled."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(float(value))


def units_sql(
    connection: Any,
    *,
    regions: Sequence[str] = (),
    source: str | None = None,
    dataset: str | None = None,
    min_rate_hz: float | None = None,
    with_spike_times: bool = False,
) -> str | None:
    """The SELECT over the ``units`` view for these filters; None when the lake is empty."""
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
    if "unit_index" not in available:
        return None
    conditions = []
    if regions:
        conditions.append(f"location_label IN ({', '.join(_literal(r) for r in regions)})")
    for column, value in (("source", source), ("dataset", dataset)):
        if value is not None:
            conditions.append(f"{column} = {_literal(value)}")
    if min_rate_hz is not None:
        conditions.append(f"firing_rate_hz >= {_literal(min_rate_hz)}")
    columns = [c for c in UNIT_COLUMNS if c in available]
    if with_spike_times:
        columns.append("spike_times_ms")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT {', '.join(columns)} FROM units{where} "
        "ORDER BY source, dataset, asset_id, unit_index"
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
    connection = connect(lake)
    query = units_sql(
        connection,
        regions=regions,
        source=source,
        dataset=dataset,
        min_rate_hz=min_rate_hz,
        with_spike_times=with_spike_times,
    )
    if query is None:
        import pandas as pd

        return pd.DataFrame(columns=list(UNIT_COLUMNS))
    frame: pd.DataFrame = connection.execute(query).df()
    return frame


def export_units(
    lake: str | os.PathLike[str], destination: str, file_format: str, **filters: Any
) -> None:
    """Write the matching units (see :func:`find_units`) as CSV or Parquet, via DuckDB.

    ``destination`` may be ``/dev/stdout``. Nothing goes through pandas, so large answers
    stream out quickly.
    """
    connection = connect(lake)
    query = units_sql(connection, **filters)
    if query is None:
        query = "SELECT " + ", ".join(f"NULL AS {c}" for c in UNIT_COLUMNS) + " WHERE false"
    options = "FORMAT csv, HEADER" if file_format == "csv" else "FORMAT parquet"
    connection.execute(f"COPY ({query}) TO {_literal(destination)} ({options})")
