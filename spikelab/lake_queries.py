"""Questions users ask the lake: what is in it, which units match, and its history.

Every question reads the lake's Delta tables (see :mod:`spikelab.io.delta_lake`) at their
current snapshot, or at the one ``as_of`` names (a version number or a time).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:  # pandas takes ~0.25 s to import: only find_units and lake_summary need it
    import pandas as pd
    from deltalake import DeltaTable

AsOf = int | str | datetime | None

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
SUMMARY_COLUMNS = ("source", "dataset", "assets", "units", "spikes", "failed", "skipped")
HISTORY_COLUMNS = ("version", "timestamp", "operation", "flow_run_id", "assets")

SummaryRow = tuple[str, str, int, int, int, int, int]
# Where each count of a summary row comes from: a status of the assets table (``ok`` is
# ``assets``), or the units table's rows and spikes.
_SUMMARY_COUNTS = ("ok", "units", "spikes", "failed", "skipped")


def lake_summary(lake: str | os.PathLike[str], as_of: AsOf = None) -> pd.DataFrame:
    """Assets, units and spikes per source and dataset (see :func:`summary_rows`)."""
    import pandas as pd

    counts = {name: "int64" for name in SUMMARY_COLUMNS[2:]}
    return pd.DataFrame(summary_rows(lake, as_of), columns=list(SUMMARY_COLUMNS)).astype(counts)


def summary_rows(lake: str | os.PathLike[str], as_of: AsOf = None) -> list[SummaryRow]:
    """(source, dataset, assets, units, spikes, failed, skipped) per dataset, sorted.

    ``assets`` counts the assets whose last ingest succeeded (those that loaded with no
    units too), ``failed`` and ``skipped`` the others, all from the ``assets`` table;
    ``units`` and ``spikes`` come from the ``units`` table (a failed re-ingest keeps the
    units published before it). An empty or missing lake gives no rows.

    Parameters
    ----------
    lake : str or PathLike
        Lake root.
    as_of : int, str or datetime, optional
        Read the lake as of this units-table version or time (see
        :func:`spikelab.io.delta_read.open_units`); the assets table is read at the commit
        that went with that version.
    """
    from spikelab.io.delta_read import open_assets, open_units

    units = open_units(lake, as_of)
    assets = open_assets(lake, units, as_of)
    counts: dict[tuple[str, str], dict[str, int]] = {}
    if units is not None:
        for source, dataset, rows, spikes in _unit_counts(units, assets):
            counts[(source, dataset)] = {"units": rows, "spikes": spikes}
    for (source, dataset, status), number in _asset_counts(assets).items():
        found = counts.setdefault((source, dataset), {})
        found[status] = found.get(status, 0) + number
    return [_summary_row(key, found) for key, found in sorted(counts.items())]


def _summary_row(key: tuple[str, str], found: dict[str, int]) -> SummaryRow:
    ok, units, spikes, failed, skipped = (found.get(name, 0) for name in _SUMMARY_COUNTS)
    return (*key, ok, units, spikes, failed, skipped)


def _unit_counts(units: DeltaTable, assets: DeltaTable | None) -> list[tuple[str, str, int, int]]:
    """(source, dataset, units, spikes) per dataset of the published rows (four columns)."""
    from spikelab.io.delta_read import published_filter

    where = published_filter(units, assets)
    rows = _query(
        units,
        "SELECT source, dataset_id, count(*) AS units, "
        "CAST(coalesce(sum(n_spikes), 0) AS BIGINT) AS spikes FROM snapshot "
        f"{'WHERE ' + where if where else ''} GROUP BY source, dataset_id",
        assets if where else None,
    )
    return [(r["source"], r["dataset_id"], r["units"], r["spikes"]) for r in rows]


def _asset_counts(assets: DeltaTable | None) -> Counter[tuple[str, str, str]]:
    """How many assets of each (source, dataset, status) the assets table records."""
    if assets is None:
        return Counter()
    rows = _query(
        assets,
        "SELECT source, dataset_id, status, count(*) AS assets FROM snapshot "
        "GROUP BY source, dataset_id, status",
    )
    return Counter({(r["source"], r["dataset_id"], r["status"]): r["assets"] for r in rows})


def _query(
    table: DeltaTable, sql: str, published: DeltaTable | None = None
) -> list[dict[str, Any]]:
    """Rows of ``sql`` over ``table``'s loaded snapshot, named ``snapshot``.

    ``published``, the assets table, is registered as ``publications`` when given. delta-rs
    answers it itself (locally or on S3, reading only the columns named), so a summary
    needs neither DuckDB nor pyarrow.dataset, which would import pandas (~0.3 s).
    """
    import pyarrow as pa
    from deltalake import QueryBuilder

    builder = QueryBuilder().register("snapshot", table)
    if published is not None:
        builder = builder.register("publications", published)
    answer = builder.execute(sql)
    rows: list[dict[str, Any]] = pa.RecordBatchReader.from_stream(answer).read_all().to_pylist()
    return rows


def format_rows(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows as a plain text table, columns right-aligned under their names.

    A missing value shows as ``-``; fractions keep six significant digits.
    """
    cells = [list(columns), *[[_cell(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join(
        " ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells
    )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")  # as precise as Delta's log
    return str(value)


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
) -> str:
    """The SELECT over the ``units`` view for these filters."""
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
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


def matching_units(
    lake: str | os.PathLike[str], *, as_of: AsOf = None, **filters: Any
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of the matching units (see :func:`find_units`), no pandas."""
    from spikelab.io.delta_read import connect

    connection = connect(lake, as_of)
    cursor = connection.execute(units_sql(connection, **filters))
    return [column[0] for column in cursor.description], cursor.fetchall()


def find_units(
    lake: str | os.PathLike[str],
    *,
    regions: Sequence[str] = (),
    source: str | None = None,
    dataset: str | None = None,
    min_rate_hz: float | None = None,
    with_spike_times: bool = False,
    as_of: AsOf = None,
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
    as_of : int, str or datetime, optional
        Read the units table as of this version or time instead of its current snapshot.

    Returns
    -------
    pandas.DataFrame
        One row per unit, ordered by source, dataset, asset and unit index.

    Raises
    ------
    LakeVersionError
        If ``as_of`` names a version or time the table does not have.
    """
    from spikelab.io.delta_read import connect

    connection = connect(lake, as_of)
    query = units_sql(
        connection,
        regions=regions,
        source=source,
        dataset=dataset,
        min_rate_hz=min_rate_hz,
        with_spike_times=with_spike_times,
    )
    frame: pd.DataFrame = connection.execute(query).df()
    return frame


def export_units(
    lake: str | os.PathLike[str],
    destination: str | os.PathLike[str] | BinaryIO,
    file_format: str,
    *,
    as_of: AsOf = None,
    **filters: Any,
) -> None:
    """Write the matching units (see :func:`find_units`) as CSV or Parquet, via DuckDB.

    ``destination`` is a file path, or a binary stream (standard output) that is sent the
    bytes of a temporary file once it is written: DuckDB reopens a path, which would empty
    a file the stream appends to. Nothing goes through pandas, so large answers are fast.
    """
    from spikelab.io.delta_read import connect

    if not isinstance(destination, str | os.PathLike):
        with tempfile.TemporaryDirectory(prefix="spikelab-export-") as folder:
            exported = os.path.join(folder, f"units.{file_format}")
            export_units(lake, exported, file_format, as_of=as_of, **filters)
            with open(exported, "rb") as source:
                shutil.copyfileobj(source, destination)
        return
    connection = connect(lake, as_of)
    query = units_sql(connection, **filters)
    options = "FORMAT csv, HEADER" if file_format == "csv" else "FORMAT parquet"
    connection.execute(f"COPY ({query}) TO {_literal(str(destination))} ({options})")


def history_rows(lake: str | os.PathLike[str], limit: int | None = None) -> list[tuple[Any, ...]]:
    """(version, timestamp, operation, flow_run_id, assets) per units-table version.

    Newest first, ``limit`` of them when given; empty for a lake with no table.
    """
    from spikelab.io.delta_read import history

    return [tuple(entry[name] for name in HISTORY_COLUMNS) for entry in history(lake, limit)]
