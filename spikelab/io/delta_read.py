"""Reading the lake's Delta tables: DuckDB views, time travel, history.

See :mod:`spikelab.io.delta_lake` for the layout and for publishing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spikelab.exceptions import LakeVersionError
from spikelab.io import storage
from spikelab.io.delta_tables import (
    ASSETS_SCHEMA,
    COMMIT_TAG,
    UNITS_SCHEMA,
    column_names,
    commit_info,
    open_table,
)
from spikelab.io.lake import ASSETS_TABLE, REGIONS_TABLE, SESSIONS_TABLE, Lake, LakeLike

if TYPE_CHECKING:
    import duckdb
    from deltalake import DeltaTable

_SKEW_MS = 60_000  # how far apart two writers' clocks may be
_SAME_ROWS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})  # operations that keep rows


def open_units(lake_root: LakeLike, as_of: int | str | datetime | None = None) -> DeltaTable | None:
    """The units table at its latest version, or as of a version or time; None if absent.

    Parameters
    ----------
    lake_root : Lake, str or PathLike
        Lake root.
    as_of : int, str or datetime, optional
        A version number (an int, or digits as text), or a time (a datetime, naive read as
        UTC, or ISO 8601 text): the last version committed at or before it.

    Raises
    ------
    LakeVersionError
        If the version does not exist, or the time is before the table's first commit.
    """
    lake = Lake.of(lake_root)
    uri = lake.units_uri
    table = open_table(uri)
    if table is None or as_of is None:
        if table is None and as_of is not None:
            raise LakeVersionError(f"{uri} has no table yet, so no version {as_of!r} to read")
        return table
    version = parse_as_of(as_of)
    newest = table.version()
    if isinstance(version, int):
        if not 0 <= version <= newest:
            raise LakeVersionError(
                f"{uri} has versions 0 to {newest}, not {version}; see `spikelab lake history`"
            )
        table.load_as_version(version)
        if version != newest:
            _check_readable(lake, table, as_of)
        return table
    first = _first_commit_time(uri)
    if first is not None and version < first:
        raise LakeVersionError(
            f"{uri} did not exist yet at {version.isoformat()} (first commit "
            f"{first.isoformat()}); ask for a later time or see `spikelab lake history`"
        )
    # By commit times, as `history` shows them: delta-rs would go by the log files'
    # modification times, a few milliseconds later, and could pick the version before.
    number = first_commit_after(uri, newest, version.timestamp() * 1000) - 1
    table.load_as_version(number if number >= 0 and commit_info(uri, number) else version)
    if table.version() != newest:
        _check_readable(lake, table, as_of)
    return table


def _check_readable(lake: Lake, table: DeltaTable, as_of: int | str | datetime) -> None:
    """Refuse a loaded older version whose data files ``lake compact`` deleted.

    The version counts as readable when its units files, and those of the assets version
    that goes with it (:func:`open_assets`), are all still there.

    Raises
    ------
    LakeVersionError
        Naming the version and the oldest version that can still be read.
    """
    if _readable(lake, table, as_of):
        return
    oldest = oldest_readable_version(lake)
    raise LakeVersionError(
        f"version {table.version()} is older than the retention window: oldest readable "
        f"version is {oldest} (`spikelab lake compact` deleted the files of older versions; "
        "see `spikelab lake history`)"
    )


def _readable(lake: Lake, units: DeltaTable, as_of: int | str | datetime) -> bool:
    """Whether ``units`` (loaded at an older version) and its assets version can be read."""
    if not _files_present(units):
        return False
    assets = open_assets(lake, units, as_of)
    return assets is None or _files_present(assets)


def _files_present(table: DeltaTable) -> bool:
    """Whether every data file of ``table``'s loaded version is still there.

    Only files the table's newest version does not use are looked for (vacuum never
    deletes those), one request each on an object store.
    """
    latest = open_table(table.table_uri)
    if latest is None:
        return False
    if latest.version() == table.version():
        return True
    current = set(latest.file_uris())
    wanted = [path for path in table.file_uris() if path not in current]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return all(pool.map(storage.exists, wanted))


def oldest_readable_version(lake_root: LakeLike) -> int | None:
    """The oldest units version that ``as_of`` can read (None when there is no table).

    Found by bisecting between the oldest version still in the log and the newest: vacuum
    deletes the files of the oldest versions first, so the readable ones are the newest.
    """
    lake = Lake.of(lake_root)
    uri = lake.units_uri
    table = open_table(uri)
    if table is None:
        return None
    newest = table.version()

    def readable(version: int) -> bool:
        table.load_as_version(version)
        return _readable(lake, table, version)

    low, high = first_commit_after(uri, newest, -1.0), newest
    if low >= high or readable(low):  # nothing vacuumed yet: one look
        return low
    while low < high:
        middle = (low + high) // 2
        if readable(middle):
            high = middle
        else:
            low = middle + 1
    return low


def open_assets(
    lake_root: LakeLike,
    units: DeltaTable | None,
    as_of: int | str | datetime | None = None,
) -> DeltaTable | None:
    """The assets table that goes with ``units`` as :func:`open_units` loaded it.

    The latest version when ``as_of`` is None; else the assets commit published together
    with the units version that ``as_of`` picked (or, when that commit never came, the
    last one before it), so a time reads the publication whose units commit it follows;
    for a time, a later assets commit made at or before it (a failed asset's) counts too.
    None when there is no assets table, or no version of it goes with ``units``.
    """
    lake = Lake.of(lake_root)
    assets = open_table(lake.assets_uri)
    if assets is None or as_of is None:
        return assets
    version = _paired_version(lake, assets, ASSETS_TABLE, units) if units is not None else -1
    when = parse_as_of(as_of)
    if isinstance(when, datetime):
        uri = lake.assets_uri
        version = max(
            version, first_commit_after(uri, assets.version(), when.timestamp() * 1000) - 1
        )
    if version < 0:
        return None
    assets.load_as_version(version)
    return assets


def _paired_version(lake: Lake, other: DeltaTable, name: str, units: DeltaTable) -> int:
    """The version of the table ``name`` published with ``units``' loaded version; -1 if none.

    Each publication commits to ``units``, then to the other tables with the same tag:
    look for the tag of the newest tagged units version at or below the loaded one among
    the versions of ``other`` committed after it (a minute's clock skew between writers
    allowed). When no commit there carries it (its writer was killed), the last version
    committed before that units version goes with it.
    """
    for version in range(units.version(), -1, -1):
        info = commit_info(lake.units_uri, version) or {}
        wanted = (info.get(COMMIT_TAG) or {}).get("commit")
        if wanted is not None:
            break
    else:
        return -1
    uri = lake.table_uri(name)
    start = first_commit_after(uri, other.version(), info["timestamp"] - _SKEW_MS)
    for version in range(start, other.version() + 1):
        if ((commit_info(uri, version) or {}).get(COMMIT_TAG) or {}).get("commit") == wanted:
            return _past_compactions(uri, version, other.version())
    found = first_commit_after(uri, other.version(), info["timestamp"]) - 1
    return _past_compactions(uri, found, other.version()) if found >= 0 else found


def _past_compactions(uri: str, version: int, newest: int) -> int:
    """``version``, or the last of the commits right after it that changed no rows.

    Compaction and checkpoints (commits without spikelab's tag) keep the rows and may be
    all that is left readable once vacuum deleted the files they replaced.
    """
    while version < newest:
        info = commit_info(uri, version + 1)
        if info is None or COMMIT_TAG in info or info.get("operation") not in _SAME_ROWS:
            break
        version += 1
    return version


def published_filter(units: DeltaTable, assets: DeltaTable | None) -> str:
    """A SQL condition keeping the units rows of finished publications; empty for all rows.

    A row counts when the ``assets`` table's row of its asset names its ``publication``
    (rows from before publication ids existed always count). The condition reads the
    assets table's ``publication`` column as ``publications``.
    """
    if "publication" not in column_names(units):
        return ""
    if assets is None or "publication" not in column_names(assets):
        return "publication IS NULL"
    return "(publication IS NULL OR publication IN (SELECT publication FROM publications))"


def first_commit_after(uri: str, newest: int, millis: float) -> int:
    """The first version of ``uri`` committed after ``millis`` (``newest + 1`` if none).

    Found by bisecting the log's commit times; a version whose log file was cleaned up
    counts as older than any time.
    """
    low, high = 0, newest + 1
    while low < high:
        middle = (low + high) // 2
        info = commit_info(uri, middle)
        if info is not None and info["timestamp"] > millis:
            high = middle
        else:
            low = middle + 1
    return low


def parse_as_of(value: int | str | datetime) -> int | datetime:
    """A version number or an aware UTC datetime from an ``--as-of`` value."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return int(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError as error:
            raise LakeVersionError(
                f"--as-of {value!r} is neither a version number nor an ISO 8601 time "
                "(e.g. 2026-12-01T22:00:00Z)"
            ) from error
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _first_commit_time(uri: str) -> datetime | None:
    """When version 0 was committed; None once its log file is cleaned up."""
    info = commit_info(uri, 0)
    return None if info is None else datetime.fromtimestamp(info["timestamp"] / 1000, UTC)


def connect(
    lake_root: LakeLike, as_of: int | str | datetime | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a ``units`` view over the units table's snapshot.

    The view reads the latest version, or the one :func:`open_units` picks for ``as_of``,
    keeping only the rows of finished publications (see :func:`published_filter`), with
    the table's columns. ``assets`` (the assets table's version that goes with it),
    ``sessions`` and ``regions`` views stand beside it. An empty lake gives empty views
    with the fixed columns. Only the columns a query names are read.

    A local table is read by DuckDB's own Parquet reader over the snapshot's files (the
    Delta log names them; a file another column set was written with reads as nulls in
    the missing columns). Remote tables, and tables using Delta features that a plain
    file read would get wrong (deletion vectors, column mapping, partitions), are read
    through ``DeltaTable.to_pyarrow_dataset``.
    """
    import duckdb

    lake = Lake.of(lake_root)
    connection = duckdb.connect()
    table = open_units(lake, as_of)
    source = _source(connection, "units", table, UNITS_SCHEMA)
    assets = open_assets(lake, table, as_of) if table is not None else None
    assets_source = _source(connection, "assets", assets, ASSETS_SCHEMA)
    connection.execute(f"CREATE VIEW assets AS SELECT * FROM {assets_source}")
    if assets is not None and "publication" in column_names(assets):
        connection.execute("CREATE VIEW publications AS SELECT publication FROM assets")
    where = published_filter(table, assets) if table is not None else ""
    condition = f" WHERE {where}" if where else ""
    connection.execute(f"CREATE VIEW units AS SELECT * FROM {source}{condition}")
    _sessions_view(connection, lake, table, assets)
    _regions_view(connection, lake)
    return connection


def _source(
    connection: duckdb.DuckDBPyConnection,
    name: str,
    table: DeltaTable | None,
    empty: pa.Schema,
) -> str:
    """The SQL source that reads ``table``'s loaded snapshot (``empty`` when there is none).

    Local plain tables are read by DuckDB's Parquet reader over the files the snapshot
    names (no pyarrow.dataset, which imports pandas: ~0.4 s on every command); the others
    through ``DeltaTable.to_pyarrow_dataset``.
    """
    paths = table.file_uris() if table is not None and _plain_files(table) else []
    if paths:
        files = ", ".join("'" + path.replace("'", "''") + "'" for path in paths)
        return f"read_parquet([{files}], union_by_name=true)"
    snapshot = table.to_pyarrow_dataset() if table is not None else empty.empty_table()
    connection.register(f"{name}_snapshot", snapshot)
    return f"{name}_snapshot"


def _sessions_view(
    connection: duckdb.DuckDBPyConnection,
    lake: Lake,
    units: DeltaTable | None,
    assets: DeltaTable | None,
) -> None:
    """A ``sessions`` view: one row per published asset, as of the units snapshot."""
    from spikelab.io.brain_columns import SESSIONS_SCHEMA

    sessions = open_table(lake.table_uri(SESSIONS_TABLE)) if units is not None else None
    if sessions is not None and units is not None and assets is not None:
        version = _paired_version(lake, sessions, SESSIONS_TABLE, units)
        if version < 0:
            sessions = None
        elif version != sessions.version():
            sessions.load_as_version(version)
    source = _source(connection, "sessions", sessions, SESSIONS_SCHEMA)
    where = published_filter(sessions, assets) if sessions is not None else ""
    condition = f" WHERE {where}" if where else ""
    connection.execute(f"CREATE VIEW sessions AS SELECT * FROM {source}{condition}")


def _regions_view(connection: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """A ``regions`` view: the Allen CCF 2017 structure tree the lake maps units onto."""
    from spikelab.brain_regions import ontology_schema

    regions = open_table(lake.table_uri(REGIONS_TABLE))
    source = _source(connection, "regions", regions, ontology_schema())
    once = "QUALIFY row_number() OVER (PARTITION BY id) = 1"  # one row per structure
    connection.execute(f"CREATE VIEW regions AS SELECT * FROM {source} {once}")


def _plain_files(table: DeltaTable) -> bool:
    """Tell whether reading the snapshot's local files as they are gives the table."""
    protocol = table.protocol()
    return (
        not storage.is_remote(table.table_uri)
        and not protocol.reader_features
        and protocol.min_reader_version < 2
        and not table.metadata().partition_columns
    )


def history(lake_root: LakeLike, limit: int | None = None) -> list[dict[str, Any]]:
    """The units table's versions, newest first (``limit`` of them when given).

    Returns
    -------
    list of dict
        ``version``, ``timestamp`` (aware UTC datetime), ``operation`` (``WRITE``,
        ``OPTIMIZE`` ...), ``flow_run_id`` and ``assets`` (the number of assets published;
        both None for commits spikelab's publishing did not make) and ``readable`` (False
        once ``lake compact`` deleted files the version needs: ``as_of`` refuses it).
        Versions whose log files were cleaned up (after ``delta.logRetentionDuration``)
        are left out.
    """
    lake = Lake.of(lake_root)
    uri = lake.units_uri
    table = open_table(uri)
    if table is None:
        return []
    newest = table.version()
    versions = range(newest, max(-1, newest - limit) if limit is not None else -1, -1)
    with ThreadPoolExecutor(max_workers=8) as pool:  # one request each on an object store
        infos = list(pool.map(lambda version: commit_info(uri, version), versions))
    oldest = oldest_readable_version(lake) or 0
    entries = []
    for version, info in zip(versions, infos, strict=True):
        if info is None:
            continue
        tag = info.get(COMMIT_TAG) or {}
        entries.append(
            {
                "version": version,
                "timestamp": datetime.fromtimestamp(info["timestamp"] / 1000, UTC),
                "operation": info.get("operation"),
                "flow_run_id": tag.get("flow_run_id"),
                "assets": tag.get("assets"),
                "readable": version >= oldest,
            }
        )
    return entries
