"""Cluster labels and per-cluster columns from the TSV files KiloSort and Phy write."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from spikelab.exceptions import FileFormatError

# Where Phy and KiloSort leave labels, curated first.
LABEL_FILES = ("cluster_group.tsv", "cluster_info.tsv", "cluster_KSLabel.tsv")
_ID_COLUMNS = ("cluster_id", "id")
_LABEL_COLUMNS = ("group", "KSLabel")


@dataclass
class ClusterTable:
    """What the TSV files say about each cluster id."""

    labels: dict[int, str] = field(default_factory=dict)
    label_sources: dict[int, str] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)
    files_used: list[str] = field(default_factory=list)


def read_tsv(path: Path) -> pd.DataFrame:
    """Read one cluster TSV; an empty file or one without an id column raises a ValueError."""
    if path.stat().st_size == 0:
        raise FileFormatError(f"cluster TSV {path} is empty (0 bytes); delete it or re-export it")
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise FileFormatError(f"cluster TSV {path} cannot be read as a TSV ({error})") from error
    if not any(column in table.columns for column in _ID_COLUMNS):
        raise FileFormatError(
            f"cluster TSV {path} has no cluster_id (or id) column; columns: {list(table.columns)}"
        )
    return table


def _ids(table: pd.DataFrame) -> list[int]:
    column = next(c for c in _ID_COLUMNS if c in table.columns)
    return [int(value) for value in table[column]]


def _scalar(value: Any) -> Any:
    """Numpy scalars to Python; empty TSV cells (NaN) stay NaN for numbers."""
    return value.item() if hasattr(value, "item") else value


def _add_labels(result: ClusterTable, table: pd.DataFrame, source: str, *, column: str) -> None:
    used = False
    for cluster_id, label in zip(_ids(table), table[column], strict=True):
        if cluster_id in result.labels or not isinstance(label, str) or not label:
            continue
        result.labels[cluster_id] = label
        result.label_sources[cluster_id] = source
        used = True
    if used:
        result.files_used.append(source)


def _add_columns(result: ClusterTable, table: pd.DataFrame) -> None:
    skip = {*_ID_COLUMNS, "group", "ch"}
    for row, cluster_id in zip(table.itertuples(index=False), _ids(table), strict=True):
        values = dict(zip(table.columns, row, strict=True))
        channel = values.get("ch")
        if channel is not None and not (isinstance(channel, float) and math.isnan(channel)):
            result.channels.setdefault(cluster_id, int(channel))
        extra = result.extra.setdefault(cluster_id, {})
        for name, value in values.items():
            if name not in skip:
                extra.setdefault(str(name), _scalar(value))


def read_cluster_table(folder: Path, cluster_info_tsv: str | Path | None) -> ClusterTable:
    """Collect labels, channels and other columns per cluster id.

    With ``cluster_info_tsv`` given, only that file is read (a path that does not exist is
    warned about and keeps every cluster). Otherwise the files of :data:`LABEL_FILES` that
    exist in ``folder`` are read; each cluster takes its label from the first file that
    labels it.
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
        label_column = next((c for c in _LABEL_COLUMNS if c in table.columns), None)
        if label_column is not None:
            _add_labels(result, table, path.name, column=label_column)
        _add_columns(result, table)
        return result

    tables = {name: read_tsv(folder / name) for name in LABEL_FILES if (folder / name).is_file()}
    for name, column in (
        ("cluster_group.tsv", "group"),
        ("cluster_info.tsv", "group"),
        ("cluster_KSLabel.tsv", "KSLabel"),
    ):
        table = tables.get(name)
        if table is not None and column in table.columns:
            _add_labels(result, table, name, column=column)
    if "cluster_info.tsv" in tables:
        _add_columns(result, tables["cluster_info.tsv"])
    return result
