"""Cluster labels and per-cluster columns from the TSV files KiloSort and Phy write."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from spikelab.exceptions import FileFormatError

# Where Phy and KiloSort leave labels, curated first.
LABEL_FILES = ("cluster_group.tsv", "cluster_info.tsv", "cluster_KSLabel.tsv")
_ID_COLUMNS = ("cluster_id", "id")
_LABEL_COLUMNS = ("group", "KSLabel")
# Attribute keys the KiloSort loader sets itself; a TSV column of that name is renamed.
_LOADER_KEYS = frozenset({"unit_id", "electrode", "location", "label", "label_source"})


@dataclass
class ClusterTable:
    """What the TSV files say about each cluster id."""

    labels: dict[int, str] = field(default_factory=dict)
    label_sources: dict[int, str] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)
    files_used: list[str] = field(default_factory=list)


@dataclass
class ClusterTsv:
    """One cluster TSV: its rows and the cluster id of each row, checked."""

    path: Path
    frame: pd.DataFrame
    ids: list[int]


def read_tsv(path: Path) -> ClusterTsv | None:
    """Read one cluster TSV; None (with a warning) when it has no ``cluster_id``/``id`` column.

    Raises
    ------
    FileFormatError
        The file is empty, is not a TSV, or its id column holds values that are not
        whole numbers.
    """
    import pandas as pd

    if path.stat().st_size == 0:
        raise FileFormatError(f"cluster TSV {path} is empty (0 bytes); delete it or re-export it")
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise FileFormatError(f"cluster TSV {path} cannot be read as a TSV ({error})") from error
    column = next((c for c in _ID_COLUMNS if c in table.columns), None)
    if column is None:
        warnings.warn(
            f"cluster TSV {path} has no cluster_id (or id) column, so its rows cannot be "
            f"matched to clusters; ignoring it and keeping every cluster. Its columns: "
            f"{[str(c) for c in table.columns]}",
            UserWarning,
            stacklevel=4,
        )
        return None
    return ClusterTsv(path, table, _checked_ids(table[column], path, column))


def _checked_ids(values: pd.Series, path: Path, column: str) -> list[int]:
    """Cluster ids as Python ints; FileFormatError naming the file, column and bad value."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() | (numbers % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise FileFormatError(
            f"cluster TSV {path}: column {column!r} must hold whole-number cluster ids, but "
            f"row {row + 1} holds {values.tolist()[row]!r}; fix or re-export the file"
        )
    return [int(value) for value in values.tolist()]


def _scalar(value: Any) -> Any:
    """Numpy scalars to Python; empty TSV cells (NaN) stay NaN for numbers."""
    return value.item() if hasattr(value, "item") else value


def _add_labels(result: ClusterTable, table: ClusterTsv, *, column: str) -> None:
    source = table.path.name
    used = False
    for cluster_id, label in zip(table.ids, table.frame[column], strict=True):
        if cluster_id in result.labels or not isinstance(label, str) or not label:
            continue
        result.labels[cluster_id] = label
        result.label_sources[cluster_id] = source
        used = True
    if used:
        result.files_used.append(source)


def _attribute_names(frame: pd.DataFrame) -> dict[Any, str]:
    """Attribute key of each TSV column; a column named like a key the loader sets is renamed.

    A text ``location`` column (a region) becomes ``location_label`` unless the file has one;
    ``location`` itself only ever holds coordinates. Other clashes get a ``tsv_`` prefix.
    """
    import pandas as pd

    names = {}
    for column in frame.columns:
        name = str(column)
        text = not pd.api.types.is_numeric_dtype(frame[column])
        if name == "location" and text and "location_label" not in frame:
            name = "location_label"
        elif name in _LOADER_KEYS:
            name = f"tsv_{name}"
        names[column] = name
    return names


def _add_columns(result: ClusterTable, table: ClusterTsv) -> None:
    skip = {*_ID_COLUMNS, "group", "ch"}
    columns = table.frame.columns
    renamed = _attribute_names(table.frame)
    for row, cluster_id in zip(table.frame.itertuples(index=False), table.ids, strict=True):
        values = dict(zip(columns, row, strict=True))
        channel = values.get("ch")
        if channel is not None and not (isinstance(channel, float) and math.isnan(channel)):
            result.channels.setdefault(cluster_id, _channel(channel, cluster_id, table.path))
        extra = result.extra.setdefault(cluster_id, {})
        for name, value in values.items():
            if name not in skip:
                extra.setdefault(renamed[name], _scalar(value))


def _channel(value: Any, cluster_id: int, path: Path) -> int:
    """A ``ch`` cell as an int; FileFormatError naming the file when it is not a channel."""
    import pandas as pd

    number = pd.to_numeric(value, errors="coerce")  # a column mixing text reads as text
    if not pd.isna(number) and float(number).is_integer():
        return int(number)
    raise FileFormatError(
        f"cluster TSV {path}: column 'ch' must hold channel numbers, but cluster {cluster_id} "
        f"has {value!r}; fix the file or pass another cluster_info_tsv"
    )


def read_cluster_table(folder: Path, cluster_info_tsv: str | Path | None) -> ClusterTable:
    """Collect labels, channels and other columns per cluster id.

    With ``cluster_info_tsv`` given, only that file is read (a path that does not exist, or
    a file without an id column, is warned about and keeps every cluster). Otherwise the
    files of :data:`LABEL_FILES` that exist in ``folder`` are read; each cluster takes its
    label from the first file that labels it.
    """
    result = ClusterTable()
    if cluster_info_tsv is not None:
        path = Path(cluster_info_tsv)
        if not path.is_absolute() and not path.exists():
            path = folder / path
        if not path.is_file():
            warnings.warn(
                f"cluster TSV {cluster_info_tsv} not found; keeping every cluster unlabelled",
                UserWarning,
                stacklevel=3,
            )
            return result
        table = read_tsv(path)
        if table is None:
            return result
        label_column = next((c for c in _LABEL_COLUMNS if c in table.frame.columns), None)
        if label_column is not None:
            _add_labels(result, table, column=label_column)
        _add_columns(result, table)
        return result

    tables: dict[str, ClusterTsv] = {}
    for name in LABEL_FILES:
        if (folder / name).is_file() and (found := read_tsv(folder / name)) is not None:
            tables[name] = found
    for name, column in (
        ("cluster_group.tsv", "group"),
        ("cluster_info.tsv", "group"),
        ("cluster_KSLabel.tsv", "KSLabel"),
    ):
        table = tables.get(name)
        if table is not None and column in table.frame.columns:
            _add_labels(result, table, column=column)
    if "cluster_info.tsv" in tables:
        _add_columns(result, tables["cluster_info.tsv"])
    return result
