"""SpikeLab sorted ``.npz`` files: per-unit spike trains, electrodes, templates, metrics."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.exceptions import DatasetNotFoundError, FileFormatError
from spikelab.loaders._common import errors_naming, existing_file
from spikelab.spikedata import SpikeData
from spikelab.units import check_sampling_rate, to_ms

_ZIP_HEADERS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip

_UNIT_FIELDS = ("electrode", "template", "amplitudes", "std_norms", "peak_sign", "max_channel_id")


def load_spikedata_from_spikelab_sorted_npz(
    filepath: str | os.PathLike[str], *, length_ms: float | None = None
) -> SpikeData:
    """Load a SpikeLab sorting result (``.npz``) into SpikeData.

    The file holds ``units``, an object array of one dict per unit (``unit_id``,
    ``spike_train`` in samples, and optionally ``x_max``, ``y_max``, ``electrode``,
    ``template``, ``amplitudes``, ``std_norms``, ``peak_sign``, ``max_channel_id``), ``fs``
    (Hz) and optionally ``locations`` (channels x 2). The object array is stored with
    pickle, so reading it can run code: load only files you trust.

    Parameters
    ----------
    filepath : str or PathLike
        The ``.npz`` file.
    length_ms : float | None, default: None
        Recording length; by default the last spike.

    Returns
    -------
    SpikeData
        Units in file order; each has ``unit_id``, ``location`` ([x_max, y_max]) and the
        optional fields present. Metadata: ``source_format`` ("SpikeLab_npz"), ``fs_Hz``
        and ``channel_locations`` when present.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    KeyError
        ``units`` or ``fs`` is missing (the message lists the keys found).
    ValueError
        The file is not a readable ``.npz``; ``fs`` is not one positive, finite rate;
        ``units`` is not a 1-D array of dicts each with a ``spike_train``; or a spike lies
        outside ``[0, length_ms]``.
    """
    path = existing_file(filepath, "SpikeLab .npz file")
    # Read through our own handle: np.load leaks its file when the zip is corrupt. And check
    # the zip header first, since np.load unpickles any other file when allow_pickle is set.
    with path.open("rb") as handle:
        if not handle.read(len(_ZIP_HEADERS[0])).startswith(_ZIP_HEADERS):
            raise FileFormatError(
                f"{path} is not an .npz archive (no zip header): write it with numpy.savez"
            )
        handle.seek(0)
        try:
            with np.load(handle, allow_pickle=True) as archive:
                found = sorted(archive.files)
                missing = [key for key in ("units", "fs") if key not in found]
                if not missing:
                    raw_units, raw_fs = archive["units"], archive["fs"]
                    locations = archive["locations"] if "locations" in found else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise FileFormatError(f"{path} is not a readable .npz file ({error})") from error
    if missing:
        raise DatasetNotFoundError(f"{path} lacks {', '.join(missing)}; keys found: {found}")
    fs_Hz = _sampling_rate(raw_fs, path)
    units = np.asarray(raw_units, dtype=object)
    if units.ndim != 1:
        raise FileFormatError(
            f"{path}: units must be a 1-D array of one dict per unit, got shape {units.shape}"
        )

    trains, attributes = [], []
    for index, unit in enumerate(units):
        if not isinstance(unit, dict) or "spike_train" not in unit:
            raise FileFormatError(f"{path}: units[{index}] is not a dict with a spike_train")
        try:
            samples = np.ravel(np.asarray(unit["spike_train"], dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise FileFormatError(
                f"{path}: units[{index}]['spike_train'] is not an array of sample numbers ({error})"
            ) from error
        trains.append(to_ms(samples, "samples", fs_Hz))
        attributes.append(_unit_attributes(unit, index))
    metadata: dict[str, Any] = {
        "source_file": str(path),
        "format": "spikelab_npz",
        "source_format": "SpikeLab_npz",
        "fs_Hz": fs_Hz,
    }
    if locations is not None:
        metadata["channel_locations"] = np.asarray(locations)
    with errors_naming(path):
        return SpikeData(trains, length=length_ms, neuron_attributes=attributes, metadata=metadata)


def _sampling_rate(fs: np.ndarray, path: Path) -> float:
    """Return the single, positive, finite rate stored in ``fs``, or raise naming ``path``."""
    if fs.size != 1:
        raise FileFormatError(f"{path}: fs must hold one sampling rate in Hz, got shape {fs.shape}")
    try:
        return check_sampling_rate(fs.item(), what="the fs entry")
    except ValueError as error:
        raise FileFormatError(f"{path}: {error}") from error


def _unit_attributes(unit: dict[str, Any], index: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {"unit_id": _plain(unit.get("unit_id", index))}
    if "x_max" in unit and "y_max" in unit:
        attributes["location"] = [float(unit["x_max"]), float(unit["y_max"])]
    for name in _UNIT_FIELDS:
        if name in unit:
            attributes[name] = _plain(unit[name])
    return attributes


def _plain(value: Any) -> Any:
    """Numpy scalars to Python scalars; arrays stay arrays."""
    return value.item() if isinstance(value, np.generic) else value
