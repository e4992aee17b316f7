"""The Parquet lake: where each output goes, and the whole lake as one table.

Layout (Hive partitions, so DuckDB, pyarrow and Polars read it as one table)::

    <root>/units/source=<source>/dataset=<dataset id>/<asset key>.parquet
    <root>/manifests/source=<source>/dataset=<dataset id>/<asset key>.json (+ .png raster)
    <root>/raw/<asset key>.zarr
    <root>/runs/<flow run id>.json
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs

from spikelab.io import storage

DEFAULT_LAKE = "./spikelab-lake"
LAKE_ENV = "SPIKELAB_LAKE"
PARTITIONS = pa.schema([("source", pa.string()), ("dataset", pa.string())])
# Longest key: room for a prefix ("dataset="), a suffix (".parquet") and a temporary name
# (~20 more characters) within the 255 bytes most filesystems allow per name.
MAX_KEY_LENGTH = 160
_HASH_LENGTH = 8


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_LENGTH]


def safe_key(text: str) -> str:
    """Make ``text`` usable as one file or partition name (no slashes, no spaces).

    Characters other than ASCII letters, digits and ``._=-`` become ``_``. A key longer
    than :data:`MAX_KEY_LENGTH` is cut and ends with ``-`` and a short hash of the whole
    ``text``, so long names stay distinct and every file name built from a key (with its
    suffix and a temporary name) fits the filesystem's limit.
    """
    key = re.sub(r"[^A-Za-z0-9._=-]+", "_", str(text)).strip("._") or "_"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return f"{key[: MAX_KEY_LENGTH - _HASH_LENGTH - 1]}-{_short_hash(str(text))}"


def distinct_key(text: str, identity: str) -> str:
    """``safe_key(text)`` made distinct by a short hash of ``identity``: ``<key>-<hash>``.

    Used when two inputs would get the same key: ``identity`` (an absolute path, say) tells
    them apart, and the result still fits :data:`MAX_KEY_LENGTH`.
    """
    key = safe_key(text)[: MAX_KEY_LENGTH - _HASH_LENGTH - 1]
    return f"{key}-{_short_hash(identity)}"


def default_lake() -> str:
    """The lake the operator configured: ``$SPIKELAB_LAKE``, else ``./spikelab-lake``.

    A local path comes back absolute (see :func:`resolve_lake`).
    """
    return resolve_lake(os.environ.get(LAKE_ENV) or DEFAULT_LAKE)


def resolve_lake(lake: str | os.PathLike[str] | None) -> str:
    """The lake root as it is recorded: an absolute local path, or the URL unchanged.

    ``None`` (or an empty string) means :func:`default_lake`. Resolving before anything
    is written keeps manifests and run summaries valid from any working directory.
    """
    text = os.fspath(lake) if lake is not None else ""
    if not text:
        return default_lake()
    if storage.is_remote(text):
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text))


@dataclass(frozen=True)
class Lake:
    """Paths of everything written under one lake root (a folder or a URL)."""

    root: str

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_LAKE) -> None:
        object.__setattr__(self, "root", str(root).rstrip("/"))

    def _partition(self, kind: str, source: str, dataset_id: str) -> str:
        return storage.join(
            self.root, kind, f"source={safe_key(source)}", f"dataset={safe_key(dataset_id)}"
        )

    def units_path(self, source: str, dataset_id: str, asset_key: str) -> str:
        """Where an asset's units table goes."""
        return storage.join(
            self._partition("units", source, dataset_id), f"{safe_key(asset_key)}.parquet"
        )

    def manifest_path(self, source: str, dataset_id: str, asset_key: str) -> str:
        """Where an asset's manifest goes."""
        return storage.join(
            self._partition("manifests", source, dataset_id), f"{safe_key(asset_key)}.json"
        )

    def raster_path(self, source: str, dataset_id: str, asset_key: str) -> str:
        """Where an asset's raster plot goes (beside its manifest)."""
        return storage.join(
            self._partition("manifests", source, dataset_id), f"{safe_key(asset_key)}.png"
        )

    def raw_path(self, asset_key: str) -> str:
        """Where an asset's raw recording (SpikeInterface Zarr) goes."""
        return storage.join(self.root, "raw", f"{safe_key(asset_key)}.zarr")

    def run_path(self, flow_run_id: str) -> str:
        """Where a flow run's summary goes."""
        return storage.join(self.root, "runs", f"{safe_key(flow_run_id)}.json")

    def manifest_files(self) -> list[str]:
        """Every manifest in the lake."""
        return storage.list_files(storage.join(self.root, "manifests"), ".json")


def open_lake(root: str | os.PathLike[str] = DEFAULT_LAKE) -> ds.Dataset:
    """Open every units table of the lake as one pyarrow dataset.

    Files from different sources carry different attribute columns; the dataset's schema is
    their union (a column a file lacks reads as null), plus the ``source`` and ``dataset``
    partition columns as strings (a dataset id such as ``000888`` stays text).
    """
    units_root = storage.join(str(root), "units")
    files = storage.list_files(units_root, ".parquet")
    if not files:
        return ds.dataset(pa.table({name: pa.array([], pa.string()) for name in PARTITIONS.names}))
    filesystem: fs.FileSystem | None = None
    base = units_root
    if storage.is_remote(units_root):
        filesystem, base = fs.FileSystem.from_uri(units_root)
        files = [fs.FileSystem.from_uri(f)[1] for f in files]
    schemas = [pq.read_schema(f, filesystem=filesystem) for f in files]
    schema = pa.unify_schemas([*(s.remove_metadata() for s in schemas), PARTITIONS])
    return ds.dataset(
        files,
        schema=schema,
        format="parquet",
        filesystem=filesystem,
        partitioning=ds.partitioning(PARTITIONS, flavor="hive"),
        partition_base_dir=base,
    )


def connect(root: str | os.PathLike[str] = DEFAULT_LAKE) -> Any:
    """Open a DuckDB connection with a ``units`` view over the whole lake.

    Local lakes are read with ``read_parquet(..., hive_partitioning=true,
    union_by_name=true)``, so files with different columns never clash; remote lakes go
    through :func:`open_lake`.
    """
    import duckdb

    connection = duckdb.connect()
    units_root = storage.join(str(root), "units")
    if storage.is_remote(units_root) or not storage.list_files(units_root, ".parquet"):
        connection.register("units", open_lake(root))
        return connection
    pattern = storage.join(os.path.abspath(units_root), "**", "*.parquet").replace("'", "''")
    connection.execute(
        "CREATE VIEW units AS SELECT * FROM read_parquet("
        f"'{pattern}', hive_partitioning=true, union_by_name=true, "
        "hive_types={'source': VARCHAR, 'dataset': VARCHAR})"
    )
    return connection
