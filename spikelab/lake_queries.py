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
from typing import TYPE_CHECKING, Any, BinaryIO, Unpack

from spikelab.unit_filter import UnitFilter, UnitFilterKeywords

if TYPE_CHECKING:  # pandas takes ~0.25 s to import: only find_units and lake_summary need it
    import duckdb
    import pandas as pd
    from deltalake import DeltaTable

    from spikelab.io.lake import LakeLike

AsOf = int | str | datetime | None

UNIT_COLUMNS = (
    "source",
    "dataset_id",
    "asset_id",
    "unit_id",
    "location_label",
    "region",
    "quality",
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


def lake_summary(lake: LakeLike, as_of: AsOf = None) -> pd.DataFrame:
    """Assets, units and spikes per source and dataset (see :func:`summary_rows`)."""
    import pandas as pd

    counts = {name: "int64" for name in SUMMARY_COLUMNS[2:]}
    return pd.DataFrame(summary_rows(lake, as_of), columns=list(SUMMARY_COLUMNS)).astype(counts)


def summary_rows(lake: LakeLike, as_of: AsOf = None) -> list[SummaryRow]:
    """(source, dataset, assets, units, spikes, failed, skipped) per dataset, sorted.

    ``assets`` counts the assets whose last ingest succeeded (those that loaded with no
    units too), ``failed`` and ``skipped`` the others, all from the ``assets`` table;
    ``units`` and ``spikes`` come from the ``units`` table (a failed re-ingest keeps the
    units published before it). An empty or missing lake gives no rows.

    Parameters
    ----------
    lake : Lake, str or PathLike
        Lake root.
    as_of : int, str or datetime, optional
        Read the lake as of this units-table version or time (see
        :func:`spikelab.io.delta_read.open_units`); the assets table is read at the commit
        that went with that version.
    """
    from spikelab.io.delta_read import open_assets, open_units
    from spikelab.io.lake import Lake

    lake = Lake.of(lake)
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


REGION_LEVELS = {"beryl": "region_beryl", "cosmos": "region_cosmos", "allen": "region"}
REGION_COLUMNS = ("region", "units", "assets")
UNMAPPED_COLUMNS = ("location_label", "region_match", "units", "assets")


def region_rows(
    lake: LakeLike, level: str = "beryl", as_of: AsOf = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Units per region at a level, and the labels the lake could not map, with counts.

    Returns
    -------
    tuple of two lists
        ``(region, units, assets)`` rows, most units first; then ``(location_label,
        region_match, units, assets)`` for the labelled units without a region (the
        curator's to-do list: add aliases, then ``spikelab lake remap``).
    """
    from spikelab.io.delta_read import connect

    column = REGION_LEVELS[level]
    connection = connect(lake, as_of)
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
    if column not in available:
        return [], []
    counted = "count(*) AS units, count(DISTINCT source || '/' || dataset_id || '/' || asset_id)"
    mapped = connection.execute(
        f"SELECT {column}, {counted} FROM units WHERE region_id IS NOT NULL "
        f"GROUP BY {column} ORDER BY units DESC, {column}"
    ).fetchall()
    unmapped = connection.execute(
        f"SELECT location_label, coalesce(region_match, 'not mapped'), {counted} FROM units "
        "WHERE region_id IS NULL AND nullif(trim(location_label), '') IS NOT NULL "
        "GROUP BY ALL ORDER BY units DESC, location_label"
    ).fetchall()
    return mapped, unmapped


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


def region_ids(connection: Any, texts: Sequence[str]) -> list[int]:
    """The Allen structure ids that region texts name, by the lake's ``regions`` view.

    A text matches an acronym exactly, else an acronym or a structure name without
    regard to case (and, for names, punctuation).

    Raises
    ------
    UnknownRegionError
        If a text names no structure, or the lake has no regions table yet.
    """
    from spikelab.exceptions import UnknownRegionError

    if not texts:
        return []
    rows = connection.execute("SELECT id, acronym, name FROM regions").fetchall()
    if not rows:
        raise UnknownRegionError(
            "the lake has no regions table yet, so regions cannot be matched: install "
            "iblatlas (pip install 'spikelab[ibl]') and run `spikelab lake remap`, or use "
            "--region-label to match the labels as written"
        )
    exact = {acronym: i for i, acronym, _ in rows}
    folded = {_fold(acronym): i for i, acronym, _ in rows}
    named = {_fold(name): i for i, _, name in rows if name}
    ids = []
    for text in texts:
        found = exact.get(text.strip())
        found = found if found is not None else folded.get(_fold(text))
        found = found if found is not None else named.get(_fold(text))
        if found is None:
            raise UnknownRegionError(
                f"--region {text!r} is no Allen CCF 2017 structure: give an acronym (CA1, "
                "HPF, VISp) or a structure name (hippocampal formation); `spikelab lake "
                "regions` lists the regions in the lake, --region-label matches raw labels"
            )
        ids.append(found)
    return ids


def _fold(text: str) -> str:
    """Lower case, runs of other characters than letters and digits as one space."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def units_sql(
    connection: Any,
    selection: UnitFilter | None = None,
    *,
    with_spike_times: bool = False,
    **filters: Unpack[UnitFilterKeywords],
) -> str:
    """The SELECT over the ``units`` view (and ``sessions``, when asked for) for a selection.

    ``selection`` (or the same ``filters`` as keywords, see :class:`UnitFilter`) says
    which units; ``regions`` keep units mapped to a structure or anything below it;
    ``columns`` adds units or sessions columns to the default ones, ``with_spike_times``
    the spike trains.
    """
    selection = UnitFilter.of(selection, **filters)
    if with_spike_times:
        selection = selection.with_columns("spike_times_ms")
    available = {row[0] for row in connection.execute("DESCRIBE units").fetchall()}
    session_columns = {row[0] for row in connection.execute("DESCRIBE sessions").fetchall()}
    conditions = []
    ids = region_ids(connection, selection.regions)
    if ids:
        listed = ", ".join(map(str, ids))
        conditions.append(
            "u.region_id IN (SELECT id FROM regions WHERE "
            f"list_has_any(ancestors, [{listed}]::BIGINT[]))"
        )
    if selection.region_labels:
        labels = ", ".join(_literal(label) for label in selection.region_labels)
        conditions.append(f"u.location_label IN ({labels})")
    for column, value in (("source", selection.source), ("dataset_id", selection.dataset)):
        if value is not None:
            conditions.append(f"u.{column} = {_literal(value)}")
    if selection.min_rate_hz is not None:
        conditions.append(f"u.firing_rate_hz >= {_literal(selection.min_rate_hz)}")
    if selection.good:
        conditions.append("u.quality = 'good'")
    join = selection.species is not None
    if selection.species is not None:
        conditions.append(f"s.species = {_literal(selection.species)}")
    selected = [f"u.{c}" for c in UNIT_COLUMNS if c in available]
    for name in selection.columns:
        if name in available and name not in UNIT_COLUMNS:
            selected.append(f"u.{name}")
        elif name in session_columns - {"source", "dataset_id", "asset_id", "publication"}:
            selected.append(f"s.{name}")
            join = True
        elif name not in UNIT_COLUMNS:
            known = sorted((available | session_columns) - {"publication"})
            raise ValueError(f"--columns {name!r} is no column of the lake; known: {known}")
    sessions = (
        " LEFT JOIN sessions s ON s.source = u.source AND s.dataset_id = u.dataset_id "
        "AND s.asset_id = u.asset_id"
        if join
        else ""
    )
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (
        f"SELECT {', '.join(selected)} FROM units u{sessions}{where} "
        "ORDER BY u.source, u.dataset_id, u.asset_id, u.unit_index"
    )


def matching_units(
    lake: LakeLike,
    selection: UnitFilter | None = None,
    *,
    as_of: AsOf = None,
    **filters: Unpack[UnitFilterKeywords],
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of the matching units (see :func:`find_units`), no pandas."""
    from spikelab.io.delta_read import connect

    selection = UnitFilter.of(selection, **filters)
    connection = connect(lake, as_of)
    cursor = connection.execute(units_sql(connection, selection))
    return [column[0] for column in cursor.description], cursor.fetchall()


def find_units(
    lake: LakeLike,
    selection: UnitFilter | None = None,
    *,
    with_spike_times: bool = False,
    as_of: AsOf = None,
    **filters: Unpack[UnitFilterKeywords],
) -> pd.DataFrame:
    """Units across every source that match all the filters given.

    Parameters
    ----------
    lake : Lake, str or PathLike
        Lake root.
    selection : UnitFilter, optional
        Which units (and which more columns); or give its fields as keywords instead.
    with_spike_times : bool, default: False
        Also return each unit's ``spike_times_ms``.
    as_of : int, str or datetime, optional
        Read the units table as of this version or time instead of its current snapshot.
    **filters
        The fields of :class:`~spikelab.unit_filter.UnitFilter`: ``regions``,
        ``region_labels``, ``source``, ``dataset``, ``min_rate_hz``, ``species``, ``good``,
        ``columns``; none means every unit.

    Returns
    -------
    pandas.DataFrame
        One row per unit, ordered by source, dataset, asset and unit index.

    Raises
    ------
    LakeVersionError
        If ``as_of`` names a version or time the table does not have.
    UnknownRegionError
        If a region names no Allen structure.
    TypeError
        If both ``selection`` and filter keywords are given.
    """
    from spikelab.io.delta_read import connect

    selection = UnitFilter.of(selection, **filters)
    if with_spike_times:
        selection = selection.with_columns("spike_times_ms")
    return units_frame(connect(lake, as_of), selection)


def units_frame(connection: duckdb.DuckDBPyConnection, selection: UnitFilter) -> pd.DataFrame:
    """The units ``selection`` matches, read through an open lake connection."""
    # Arrow, then pandas: twice as fast as DuckDB's own .df() on large answers
    frame: pd.DataFrame = (
        connection.sql(units_sql(connection, selection)).to_arrow_table().to_pandas()
    )
    return frame


def export_units(
    lake: LakeLike,
    destination: str | os.PathLike[str] | BinaryIO,
    file_format: str,
    selection: UnitFilter | None = None,
    *,
    as_of: AsOf = None,
    **filters: Unpack[UnitFilterKeywords],
) -> None:
    """Write the matching units (see :func:`find_units`) as CSV or Parquet, via DuckDB.

    ``destination`` is a file path, or a binary stream (standard output) that is sent the
    bytes of a temporary file once it is written: DuckDB reopens a path, which would empty
    a file the stream appends to. Nothing goes through pandas, so large answers are fast.
    """
    from spikelab.io.delta_read import connect

    selection = UnitFilter.of(selection, **filters)
    if not isinstance(destination, str | os.PathLike):
        with tempfile.TemporaryDirectory(prefix="spikelab-export-") as folder:
            exported = os.path.join(folder, f"units.{file_format}")
            export_units(lake, exported, file_format, selection, as_of=as_of)
            with open(exported, "rb") as source:
                shutil.copyfileobj(source, destination)
        return
    connection = connect(lake, as_of)
    query = units_sql(connection, selection)
    options = "FORMAT csv, HEADER" if file_format == "csv" else "FORMAT parquet"
    connection.execute(f"COPY ({query}) TO {_literal(str(destination))} ({options})")


def history_rows(lake: LakeLike, limit: int | None = None) -> list[tuple[Any, ...]]:
    """(version, timestamp, operation, flow_run_id, assets) per units-table version.

    Newest first, ``limit`` of them when given; empty for a lake with no table.
    """
    from spikelab.io.delta_read import history

    return [tuple(entry[name] for name in HISTORY_COLUMNS) for entry in history(lake, limit)]
