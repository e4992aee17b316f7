"""SpikeLab sorted ``.npz`` files: per-unit spike trains, electrodes, templates, metrics."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from spikelab.loaders._common import build_spikedata, existing_file

from spikelab.exceptions import DatasetNotFoundError, FileFormatError
from spikelab.spikedata import SpikeData
from spikelab.units import check_sampling_rate, to_ms

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
    KeyError
        ``units`` or ``fs`` is missing (the message lists the keys found).
    ValueError
        The file is not a readable ``.npz``, or a unit lacks its ``spike_train``.
    """
    path = existing_file(filepath, "SpikeLab .npz file")
    try:
        archive = np.load(path, allow_pickle=True)
    except (ValueError, OSError) as error:
        raise FileFormatError(f"{path} is not a readable .npz file ({error})") from error
    with archive:
        missing = [key for key in ("units", "fs") if key not in archive.files]
        if missing:
            raise DatasetNotFoundError(
                f"{path} lacks {', '.join(missing)}; keys found: {sorted(archive.files)}"
            )
        units = list(archive["units"])
        fs_Hz = check_sampling_rate(archive["fs"].item(), what=f"{path}")
        locations = archive["locations"] if "locations" in archive.files else None

    trains, attributes = [], []
    for index, unit in enumerate(units):
        if not isinstance(unit, dict) or "spike_train" not in unit:
            raise FileFormatError(f"{path}: units[{index}] is not a dict with a spike_train")
        trains.append(to_ms(np.ravel(unit["spike_train"]), "samples", fs_Hz))
        attributes.append(_unit_attributes(unit, index))
    metadata: dict[str, Any] = {
        "source_file": str(path),
        "format": "spikelab_npz",
        "source_format": "SpikeLab_npz",
        "fs_Hz": fs_Hz,
    }
    if locations is not None:
        metadata["channel_locations"] = np.asarray(locations)
    return build_spikedata(
        path, trains, length=length_ms, neuron_attributes=attributes, metadata=metadata
    )


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
