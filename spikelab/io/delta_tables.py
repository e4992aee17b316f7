"""The lake's Delta tables: their names and schemas, opening them, and committing to them.

What every module that reads or writes the tables shares: where each table lives under a
:class:`~spikelab.io.lake.Lake`, the fixed columns of ``units`` and ``assets``, the SQL
conditions that name an asset's or a publication's rows, how a batch's columns are given
the types a table already has, and the commit loop (tags, post-commit hooks, retries of
conflicts). Publishing is :mod:`spikelab.io.delta_lake`; reading,
:mod:`spikelab.io.delta_read`.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from spikelab.exceptions import LakeCommitError, LakeSchemaError
from spikelab.io import storage
from spikelab.io.lake import SESSIONS_TABLE, UNITS_TABLE, Lake, LakeLike

if TYPE_CHECKING:
    from deltalake import DeltaTable, PostCommitHookProperties

# Tables whose rows carry a publication id and count only while an assets row names it.
PUBLISHED_TABLES = (UNITS_TABLE, SESSIONS_TABLE)
DEFAULT_RETENTION_HOURS = 168  # Delta's own default: a week of time travel after compaction
# Log files and replaced data files are kept as long as each other: a version can be read
# back only while both are there. compact() removes the expired ones.
TABLE_CONFIGURATION = {
    "delta.logRetentionDuration": f"interval {DEFAULT_RETENTION_HOURS} hours",
    "delta.deletedFileRetentionDuration": f"interval {DEFAULT_RETENTION_HOURS} hours",
}
KEY_COLUMNS = ("source", "dataset_id", "asset_id")
UNITS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("dataset_id", pa.string()),
        ("asset_id", pa.string()),
        ("unit_index", pa.int32()),
        ("unit_id", pa.string()),
        ("n_spikes", pa.int64()),
        ("firing_rate_hz", pa.float64()),
        ("spike_times_ms", pa.list_(pa.float64())),
        ("location_x", pa.float64()),
        ("location_y", pa.float64()),
        ("location_z", pa.float64()),
        ("location_label", pa.string()),
        ("group_name", pa.string()),
        ("electrode", pa.int32()),
        ("publication", pa.string()),
    ]
)
ASSETS_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("dataset_id", pa.string()),
        ("asset_id", pa.string()),
        ("content_id", pa.string()),
        ("listed_id", pa.string()),
        ("status", pa.string()),
        ("rows", pa.int64()),
        ("manifest", pa.string()),
        ("units_metadata", pa.string()),
        ("version", pa.int64()),
        ("flow_run_id", pa.string()),
        ("published_at", pa.timestamp("us", tz="UTC")),
        ("publication", pa.string()),
        ("owner", pa.string()),
    ]
)
# The key of the units footer (schema metadata) that spikelab.io.units_table writes.
FOOTER_KEY = b"spikelab"
COMMIT_TAG = "spikelab"
MAX_ATTEMPTS = 8  # tries of a commit that conflicts with other writers
_T = TypeVar("_T")

AssetKey = tuple[str, str, str]


def units_uri(lake_root: LakeLike) -> str:
    """Where the units table lives under a lake root."""
    return Lake.of(lake_root).units_uri


def assets_uri(lake_root: LakeLike) -> str:
    """Where the assets table lives under a lake root."""
    return Lake.of(lake_root).assets_uri


def table_uri(lake_root: LakeLike, table: str) -> str:
    """Where one of the lake's tables (e.g. :data:`SESSIONS_TABLE`) lives under a root."""
    return Lake.of(lake_root).table_uri(table)


def storage_options(location: str) -> dict[str, str] | None:
    """delta-rs storage options for ``location``: None locally, safe commits on S3.

    On S3, concurrent writers are only safe with conditional puts (``conditional_put=etag``);
    the endpoint and region come from ``AWS_ENDPOINT_URL(_S3)`` and ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``; credentials are read from the environment by delta-rs itself.
    """
    if not location.startswith("s3://"):
        return None
    options = {"conditional_put": "etag"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    return options


def open_table(uri: str) -> DeltaTable | None:
    """The Delta table at ``uri`` (latest version), or None when there is no table yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    # Not DeltaTable.is_deltatable: it holds the GIL while it waits on the network.
    try:
        return DeltaTable(uri, storage_options=storage_options(uri))
    except TableNotFoundError:
        return None


def table_schema(table: DeltaTable) -> pa.Schema:
    """A Delta table's columns and types, as its loaded version has them, in Arrow."""
    return pa.schema(table.schema().to_arrow())


def column_names(table: DeltaTable) -> list[str]:
    """The names of a Delta table's columns, as its loaded version has them."""
    names: list[str] = table_schema(table).names
    return names


def quote(value: str) -> str:
    """A SQL text literal, quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def key_predicate(key: AssetKey) -> str:
    """The SQL condition of one asset's rows."""
    return " AND ".join(f"{c} = {quote(v)}" for c, v in zip(KEY_COLUMNS, key, strict=True))


def keys_predicate(keys: Iterable[AssetKey]) -> str:
    """The rows of these assets: one ``(source AND dataset_id AND asset_id)`` per asset."""
    return " OR ".join(f"({key_predicate(key)})" for key in keys)


def legacy_predicate(key: AssetKey) -> str:
    """The rows of one asset written before publication ids existed (``publication`` null)."""
    return f"({key_predicate(key)} AND publication IS NULL)"


def publications_predicate(publications: Iterable[str]) -> str:
    """The SQL condition of the rows of these publications."""
    return f"publication IN ({', '.join(quote(p) for p in sorted(publications))})"


def lake_types(table: pa.Table) -> pa.Table:
    """Give attribute columns their lake types: no null-typed column, integers as float64.

    Delta has no null type (a column whose every value is missing carries no type), and an
    attribute whose values are whole numbers in one asset and fractions in another must
    land in one column: attribute integers are stored as float64 (exact up to 2**53). The
    fixed columns keep their own types.
    """
    table = table.replace_schema_metadata(None)
    for index in reversed(range(table.num_columns)):
        field = table.schema.field(index)
        if field.name in UNITS_SCHEMA.names:
            continue
        if pa.types.is_null(field.type):
            table = table.remove_column(index)
        elif pa.types.is_integer(field.type):
            column = pc.cast(table.column(index), pa.float64())
            table = table.set_column(index, pa.field(field.name, pa.float64()), column)
    return table


def conform(data: pa.Table, existing: pa.Schema | None, uri: str) -> pa.Table:
    """Cast columns the table already has (its schema: ``existing``) to its types, safely.

    delta-rs would cast on its own, truncating 1.5 into an int64 column: do it here, safely.
    """
    if existing is None:
        return data
    for index, field in enumerate(data.schema):
        if field.name not in existing.names:
            continue
        target = existing.field(field.name).type
        if field.type.equals(target):
            continue
        try:
            column = pc.cast(data.column(index), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise LakeSchemaError(
                f"column {field.name!r} of {uri} holds {target}, but the assets being "
                f"published have {field.type} values that do not fit ({error}). Rename the "
                "attribute or convert it when loading so every source agrees on its type"
            ) from error
        data = data.set_column(index, pa.field(field.name, target), column)
    return data


def publish_hooks() -> PostCommitHookProperties:
    """What runs after each publishing commit: checkpoints, but no expired-log cleanup.

    delta-rs's cleanup lists and stats the whole ``_delta_log`` folder after every commit,
    a cost that grows with each version (on a local disk, one commit at 5,000 versions took
    ~90 ms with it and ~45 ms without); :func:`compact` cleans the log instead.
    """
    from deltalake import PostCommitHookProperties

    return PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


def retrying(action: Callable[[], _T], what: str, attempts: int) -> _T:
    """Run ``action``, retrying commit conflicts with exponential backoff and jitter."""
    from deltalake.exceptions import DeltaError

    attempt = 1
    while True:
        try:
            return action()
        except DeltaError as error:
            if not is_conflict(error):
                raise
            if attempt >= attempts:
                raise LakeCommitError(
                    f"{what}: the commit still conflicted with other writers after "
                    f"{attempts} attempts ({error}); the table is unchanged, try again"
                ) from error
        time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.5))
        attempt += 1


def is_conflict(error: Exception) -> bool:
    """Whether a delta-rs error means another writer committed first."""
    from deltalake.exceptions import CommitFailedError

    text = str(error).lower()
    return isinstance(error, CommitFailedError) or any(
        word in text for word in ("conflict", "already exists", "changed since")
    )


def commit_info(uri: str, version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` of one version, read from its log file; None once it is cleaned.

    Read with pyarrow rather than ``DeltaTable.history``, which holds the GIL while it
    waits on the network (every other thread of the process stops meanwhile).
    """
    path = storage.join(uri, "_delta_log", f"{version:020d}.json")
    try:
        lines = storage.get_bytes(path).splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        info = json.loads(line).get("commitInfo")
        if info is not None:
            return dict(info)
    return None
