"""Spike trains out of the lake: the selected units as SpikeData, NWB, SpikeLab .npz or Parquet.

Units are chosen as ``spikelab lake units`` chooses them, by a
:class:`~spikelab.unit_filter.UnitFilter` (regions, source, dataset, minimum rate ...; see
:func:`spikelab.lake_queries.find_units`), as of a version or time. In Python,
:func:`lake_spikedata` gives one :class:`~spikelab.spikedata.SpikeData` per asset, each
with the length, start time and metadata its asset was published with (subject fields from
the lake's ``sessions`` table when it has them). :func:`export_selection` writes the whole
selection to one file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Unpack

import numpy as np

from spikelab.io.json_codec import decode
from spikelab.io.lake import Lake, LakeLike
from spikelab.spikedata import SpikeData
from spikelab.unit_filter import UnitFilter, UnitFilterKeywords

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

EXPORT_FORMATS = ("nwb", "npz", "parquet")
SUBJECT_FIELDS = ("subject_id", "species", "sex", "age")
# The .npz clock: spike trains are stored in samples of a 1 kHz clock, i.e. milliseconds,
# so they read back exactly; the recording's own rate is kept as ``sampling_rate_hz``.
NPZ_FS_HZ = 1000.0
AsOf = int | str | datetime | None


class Exported(NamedTuple):
    """What :func:`export_selection` wrote: the file, and how many assets and units."""

    path: Path
    assets: int
    units: int


def lake_spikedata(
    lake: LakeLike,
    selection: UnitFilter | None = None,
    *,
    as_of: AsOf = None,
    **filters: Unpack[UnitFilterKeywords],
) -> list[SpikeData]:
    """The matching units with their spike trains, as one SpikeData per asset.

    Parameters
    ----------
    lake : Lake, str or PathLike
        Lake root.
    selection : UnitFilter, optional
        Which units; or give its fields (``regions``, ``dataset`` ...) as keywords instead.
    as_of : int, str or datetime, optional
        Read the lake as of this version or time.
    **filters
        The fields of :class:`~spikelab.unit_filter.UnitFilter`, as
        :func:`spikelab.lake_queries.find_units` takes them.

    Returns
    -------
    list of SpikeData
        One per asset that has matching units, in source, dataset and asset order; units in
        their asset's order. Each keeps its asset's ``length`` and ``start_time`` and the
        metadata it was published with, plus ``source``, ``dataset_id`` and ``asset_id``
        (and the subject fields of the lake's sessions table, when it has them). Each unit
        has ``unit_id`` (an int when its asset's ids were), and ``location_label``,
        ``region``, ``quality``, ``electrode`` and ``location`` when known.

    Raises
    ------
    LakeVersionError
        If ``as_of`` names a version or time the lake cannot read.
    """
    from spikelab.io.delta_read import connect
    from spikelab.lake_queries import units_frame

    selection = UnitFilter.of(selection, **filters).with_columns("spike_times_ms")
    connection = connect(lake, as_of)
    frame = units_frame(connection, selection)
    if frame.empty:
        return []
    footers = _footers(connection)
    subjects = _subjects(connection)
    result = []
    for key, rows in frame.groupby(["source", "dataset_id", "asset_id"], sort=False):
        source_name, dataset_id, asset_id = (str(part) for part in key)
        footer = footers.get((source_name, dataset_id, asset_id), {})
        result.append(_asset_spikedata((source_name, dataset_id, asset_id), rows, footer, subjects))
    return result


def _asset_spikedata(
    key: tuple[str, str, str],
    rows: pd.DataFrame,
    footer: dict[str, Any],
    subjects: dict[tuple[str, str, str], dict[str, Any]],
) -> SpikeData:
    """One asset's selected units as SpikeData, with the metadata its footer kept."""
    trains = [np.asarray(times, dtype=np.float64) for times in rows["spike_times_ms"]]
    integer_ids = bool(footer.get("unit_id_is_int"))
    attributes = []
    for row in rows.itertuples(index=False):
        unit_id = row.unit_id
        entry: dict[str, Any] = {"unit_id": int(unit_id) if integer_ids else unit_id}
        for name in ("location_label", "region", "quality"):
            value = getattr(row, name, None)
            if isinstance(value, str):
                entry[name] = value
        if not _missing(row.electrode):
            entry["electrode"] = int(row.electrode)
        location = [row.location_x, row.location_y, row.location_z]
        known = [float(value) for value in location if not _missing(value)]
        if known:
            entry["location"] = known
        attributes.append(entry)
    metadata = decode(footer["metadata"]) if "metadata" in footer else {}
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    if footer.get("sampling_rate_hz"):
        metadata.setdefault("sampling_rate_hz", footer["sampling_rate_hz"])
    metadata.update({k: v for k, v in subjects.get(key, {}).items() if v is not None})
    metadata.update(dict(zip(("source", "dataset_id", "asset_id"), key, strict=True)))
    length = footer.get("length_ms")
    last = max((train[-1] for train in trains if train.size), default=0.0)
    return SpikeData(
        trains,
        length=max(float(length), last) if length is not None else None,
        start_time=float(footer.get("start_time_ms") or 0.0),
        neuron_attributes=attributes,
        metadata=metadata,
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _footers(connection: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], Any]:
    """Each asset's units footer (length, start, ids, metadata) from the ``assets`` view."""
    rows = connection.execute(
        "SELECT source, dataset_id, asset_id, units_metadata FROM assets "
        "WHERE units_metadata IS NOT NULL AND units_metadata <> ''"
    ).fetchall()
    return {tuple(row[:3]): json.loads(row[3]) for row in rows}


def _subjects(
    connection: duckdb.DuckDBPyConnection,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Subject fields per asset from the lake's ``sessions`` view, when the lake has one."""
    import duckdb

    try:
        names = {row[0] for row in connection.execute("DESCRIBE sessions").fetchall()}
    except duckdb.Error:  # a lake without a sessions table
        return {}
    fields = [name for name in SUBJECT_FIELDS if name in names]
    if not fields or not {"source", "dataset_id", "asset_id"} <= names:
        return {}
    rows = connection.execute(
        f"SELECT source, dataset_id, asset_id, {', '.join(fields)} FROM sessions"
    ).fetchall()
    return {tuple(row[:3]): dict(zip(fields, row[3:], strict=True)) for row in rows}


def combined(selection: Sequence[SpikeData]) -> SpikeData:
    """Several assets' SpikeData as one: their units side by side.

    One asset comes back as it is. Units of several keep their asset in attributes
    (``source``, ``dataset_id``, ``asset_id``) and their ids become
    ``<dataset_id>/<asset_id>/<unit_id>`` text, unique across the selection; metadata
    fields on which every asset agrees (the subject, say) are kept.
    """
    if len(selection) == 1:
        return selection[0]
    trains, attributes = [], []
    for sd in selection:
        key = {name: sd.metadata[name] for name in ("source", "dataset_id", "asset_id")}
        for train, entry in zip(sd.train, sd.neuron_attributes or [], strict=True):
            trains.append(train)
            unit = f"{key['dataset_id']}/{key['asset_id']}/{entry.get('unit_id')}"
            attributes.append({**entry, **key, "unit_id": unit})
    shared = {
        name: value
        for name, value in selection[0].metadata.items()
        if all(_same(sd.metadata.get(name), value) for sd in selection[1:])
    }
    return SpikeData(
        trains,
        length=max(sd.start_time + sd.length for sd in selection),
        neuron_attributes=attributes,
        metadata=shared,
    )


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except ValueError:  # arrays
        return False


def export_selection(
    lake: LakeLike,
    output: str | os.PathLike[str],
    file_format: str,
    selection: UnitFilter | None = None,
    *,
    as_of: AsOf = None,
    **filters: Unpack[UnitFilterKeywords],
) -> Exported:
    """Write the matching units with their spike trains to one file.

    Parameters
    ----------
    lake : Lake, str or PathLike
        Lake root.
    output : str or PathLike
        The file to write (under a temporary name, then renamed into place).
    file_format : {"nwb", "npz", "parquet"}
        ``parquet``: the units rows, ``spike_times_ms`` included. ``npz``: a SpikeLab
        sorted ``.npz`` (read it with ``load_spikedata_from_spikelab_sorted_npz``; trains
        in samples of a 1 kHz clock, so milliseconds). ``nwb``: an NWB file written by
        :func:`spikelab.io.export_spikedata_to_nwb`, with the subject when the lake has
        it (DANDI-ready then).
    selection : UnitFilter, optional
        Which units; or give its fields (``regions``, ``dataset`` ...) as keywords instead.
    as_of : int, str or datetime, optional
        Read the lake as of this version or time.
    **filters
        The fields of :class:`~spikelab.unit_filter.UnitFilter`.

    Returns
    -------
    Exported
        The path written, and how many assets and units it holds.

    Raises
    ------
    ValueError
        An unknown format, or no unit matches (nothing is written).
    """
    if file_format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {file_format!r}")
    selection = UnitFilter.of(selection, **filters)
    lake = Lake.of(lake)
    found = lake_spikedata(lake, selection, as_of=as_of)
    if not found:
        raise ValueError(f"no unit in lake {lake} matches the filters: nothing to export")
    destination = Path(output).absolute()
    if file_format == "parquet":
        from spikelab.lake_queries import export_units

        with _staged(destination) as staged:
            trains = selection.with_columns("spike_times_ms")
            export_units(lake, staged, "parquet", trains, as_of=as_of)
    elif file_format == "npz":
        with _staged(destination) as staged:
            write_spikelab_npz(combined(found), staged)
    else:
        from spikelab.io.nwb import export_spikedata_to_nwb

        export_spikedata_to_nwb(combined(found), destination)
    return Exported(destination, len(found), sum(sd.N for sd in found))


class _staged:
    """A temporary path beside ``destination``, renamed onto it when the block succeeds."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination

    def __enter__(self) -> str:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        handle, self.temporary = tempfile.mkstemp(
            prefix=f".{self.destination.name}.", suffix=".part", dir=self.destination.parent
        )
        os.close(handle)
        return self.temporary

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            os.replace(self.temporary, self.destination)
        else:
            Path(self.temporary).unlink(missing_ok=True)


def write_spikelab_npz(sd: SpikeData, path: str | os.PathLike[str]) -> None:
    """Write ``sd`` as a SpikeLab sorted ``.npz`` that the project's loader reads back.

    ``units`` holds one dict per unit (``unit_id``, ``spike_train`` in samples of
    :data:`NPZ_FS_HZ`, i.e. milliseconds, and ``x_max``/``y_max``, ``electrode`` when
    known); ``fs`` is :data:`NPZ_FS_HZ`; the recording's own rate, when known, is kept
    as ``sampling_rate_hz``. ``units`` is an object array: the loader unpickles it.
    """
    units = np.empty(sd.N, dtype=object)
    for index, (train, entry) in enumerate(
        zip(sd.train, sd.neuron_attributes or [{}] * sd.N, strict=True)
    ):
        unit: dict[str, Any] = {
            "unit_id": entry.get("unit_id", index),
            "spike_train": np.asarray(train, dtype=np.float64) * (NPZ_FS_HZ / 1000.0),
        }
        location = entry.get("location") or []
        if len(location) >= 2:
            unit["x_max"], unit["y_max"] = float(location[0]), float(location[1])
        if entry.get("electrode") is not None:
            unit["electrode"] = entry["electrode"]
        units[index] = unit
    arrays: dict[str, Any] = {"units": units, "fs": np.array(NPZ_FS_HZ)}
    rate = sd.metadata.get("sampling_rate_hz")
    if rate:
        arrays["sampling_rate_hz"] = np.array(float(rate))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
