"""The lake: where each output goes, and how to open the units as one table.

Layout under a lake root (a folder or a URL)::

    <root>/tables/units/    Delta table, one row per unit (see spikelab.io.delta_lake)
    <root>/tables/assets/   Delta table, one row per asset (skip checks, provenance)
    <root>/tables/sessions/ Delta table, one row per published asset (subject, session)
    <root>/tables/regions/  Delta table, the Allen CCF structure tree units are mapped onto
    <root>/manifests/source=<source>/dataset=<dataset id>/<asset key>.json (+ .png raster)
    <root>/raw/<asset key>.zarr
    <root>/runs/<flow run id>.json
    <root>/journals/<id>.json  what a commit in progress still has to write (see
                               spikelab.io.publish_journal)

A :class:`Lake` is one root resolved once; pass it down rather than the string.
Each manifest records the units table version its asset's rows landed in.
:func:`connect` and :func:`open_lake` read the units table, optionally as of an older
version or time; :func:`lake_spikedata` gives the units a query selects back as SpikeData,
one per asset (see :mod:`spikelab.io.lake_export`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from spikelab.io import storage

if TYPE_CHECKING:
    from datetime import datetime

    import duckdb
    import pyarrow.dataset as ds

DEFAULT_LAKE = "./spikelab-lake"
UNITS_TABLE = "tables/units"
ASSETS_TABLE = "tables/assets"
SESSIONS_TABLE = "tables/sessions"
REGIONS_TABLE = "tables/regions"
LAKE_ENV = "SPIKELAB_LAKE"
# Longest key: room for a prefix ("dataset="), a suffix (".parquet") and a temporary name
# (~20 more characters) within the 255 bytes most filesystems allow per name.
MAX_KEY_LENGTH = 160
_HASH_LENGTH = 8
# A lake root as functions take it: the resolved Lake, or a path or URL not resolved yet.
LakeLike: TypeAlias = "str | os.PathLike[str] | Lake"


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


def resolve_lake(lake: LakeLike | None) -> str:
    """The lake root as it is recorded: an absolute local path, or the URL unchanged.

    ``None`` (or an empty string) means :func:`default_lake`; a :class:`Lake` gives its
    root. Resolving before anything is written keeps manifests and run summaries valid
    from any working directory.
    """
    if isinstance(lake, Lake):
        return lake.root
    text = os.fspath(lake) if lake is not None else ""
    if not text:
        return default_lake()
    if storage.is_remote(text):
        return text.rstrip("/")
    return os.path.abspath(os.path.expanduser(text))


@dataclass(frozen=True)
class Lake:
    """One lake root, resolved once, and where everything under it goes.

    ``Lake(root)`` resolves ``root`` as :func:`resolve_lake` does (an absolute local path or
    a URL without a trailing slash); give the object, not the string, to the functions
    that read and write the lake. They take either and convert once, with :meth:`of`,
    which hands a ``Lake`` back unchanged. ``str(lake)`` and ``os.fspath(lake)`` give the
    root, so a ``Lake`` goes wherever a root path is expected.

    Examples
    --------
    >>> lake = Lake("s3://bucket/lake/")
    >>> lake.root, lake.units_uri
    ('s3://bucket/lake', 's3://bucket/lake/tables/units')
    """

    root: str

    def __init__(self, root: LakeLike | None = DEFAULT_LAKE) -> None:
        object.__setattr__(self, "root", resolve_lake(root))

    @classmethod
    def of(cls, lake: LakeLike | None) -> Lake:
        """``lake`` itself when it is a ``Lake``, else ``Lake(lake)``."""
        return lake if isinstance(lake, Lake) else cls(lake)

    def __str__(self) -> str:
        return self.root

    def __fspath__(self) -> str:
        return self.root

    def table_uri(self, table: str) -> str:
        """Where one of the lake's tables (e.g. :data:`SESSIONS_TABLE`) lives."""
        return storage.join(self.root, table)

    @property
    def units_uri(self) -> str:
        """Where the units table lives."""
        return self.table_uri(UNITS_TABLE)

    @property
    def assets_uri(self) -> str:
        """Where the assets table lives."""
        return self.table_uri(ASSETS_TABLE)

    def _partition(self, kind: str, source: str, dataset_id: str) -> str:
        return storage.join(
            self.root, kind, f"source={safe_key(source)}", f"dataset={safe_key(dataset_id)}"
        )

    def units_path(self, source: str, dataset_id: str, asset_key: str) -> str:
        """Where the old Hive layout kept an asset's units file (read by ``lake migrate``)."""
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


def open_lake(
    root: LakeLike = DEFAULT_LAKE, as_of: int | str | datetime | None = None
) -> ds.Dataset:
    """The lake's units table (latest, or as of a version or time) as a pyarrow dataset.

    An empty lake gives an empty dataset with the table's fixed columns. ``as_of`` is read
    as by :func:`spikelab.io.delta_read.open_units`. Only rows of finished publications are
    in it (see :func:`spikelab.io.delta_read.published_filter`).
    """
    import pyarrow.dataset as ds  # pulls in pandas: only for callers that want a dataset

    from spikelab.io import delta_read
    from spikelab.io.delta_tables import UNITS_SCHEMA, column_names

    lake = Lake.of(root)
    table = delta_read.open_units(lake, as_of)
    if table is None:
        return ds.dataset(UNITS_SCHEMA.empty_table())
    units = table.to_pyarrow_dataset()
    if "publication" not in units.schema.names:
        return units
    assets = delta_read.open_assets(lake, table, as_of)
    named = []
    if assets is not None and "publication" in column_names(assets):
        named = assets.to_pyarrow_table(columns=["publication"]).column(0).drop_null()
    publication = ds.field("publication")
    return units.filter(publication.is_null() | publication.isin(named))


def connect(
    root: LakeLike = DEFAULT_LAKE, as_of: int | str | datetime | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a ``units`` view over the lake's units table.

    The view reads the latest snapshot, or the one ``as_of`` names (a version number or a
    time); see :func:`spikelab.io.delta_read.connect`.
    """
    from spikelab.io import delta_read

    return delta_read.connect(root, as_of)


def __getattr__(name: str) -> object:
    """``lake_spikedata`` (spike trains out), imported on first use: it needs h5py and NumPy."""
    if name == "lake_spikedata":
        from spikelab.io.lake_export import lake_spikedata

        return lake_spikedata
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
