"""SpikeLab sorted ``.npz`` files: per-unit spike trains, electrodes, templates, metrics."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from spikelab.exceptions import (
    DatasetNotFoundError,
    FileFormatError,
    UnpicklingWarning,
    UntrustedPickleError,
)
from spikelab.loaders._common import errors_naming, existing_file, python_value
from spikelab.spikedata import SpikeData
from spikelab.units import check_sampling_rate, to_ms

_ZIP_HEADERS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members; an empty zip

_READ_KEYS = ("units", "fs", "locations")
_UNIT_FIELDS = ("electrode", "template", "amplitudes", "std_norms", "peak_sign", "max_channel_id")


def load_spikedata_from_spikelab_sorted_npz(
    filepath: str | os.PathLike[str],
    *,
    length_ms: float | None = None,
    allow_pickle: bool = True,
) -> SpikeData:
    """Load a SpikeLab sorting result (``.npz``) into SpikeData.

    The file holds ``units``, an object array of one dict per unit (``unit_id``,
    ``spike_train`` in samples, and optionally ``x_max``, ``y_max``, ``electrode``,
    ``template``, ``amplitudes``, ``std_norms``, ``peak_sign``, ``max_channel_id``), ``fs``
    (Hz) and optionally ``locations`` (channels x 2). Plain numeric arrays are read without
    pickle; object arrays (``units`` always is one) can only be unpickled, which can run
    code: load only files you trust.

    Parameters
    ----------
    filepath : str or PathLike
        The ``.npz`` file.
    length_ms : float | None, default: None
        Recording length; by default the last spike.
    allow_pickle : bool, default: True
        Unpickle the object arrays the loader needs, with a warning (upstream's behaviour).
        False refuses any that needs pickle, with an error naming it, before unpickling
        anything.

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
    UntrustedPickleError
        (a ``ValueError``) ``allow_pickle=False`` and a key the loader reads needs pickle.

    Warns
    -----
    UnpicklingWarning
        When object arrays are unpickled, naming the file and the keys.
    """
    path = existing_file(filepath, "SpikeLab .npz file")
    found, arrays = _read_arrays(path, allow_pickle)
    missing = [key for key in ("units", "fs") if key not in found]
    if missing:
        raise DatasetNotFoundError(f"{path} lacks {', '.join(missing)}; keys found: {found}")
    raw_units, raw_fs, locations = arrays["units"], arrays["fs"], arrays.get("locations")
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


def _read_arrays(path: Path, allow_pickle: bool) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every key of the archive, and the arrays the loader reads (unpickled only if allowed).

    numpy reads plain arrays without pickle; only the keys it refuses that way are read
    again with pickle, after the warning, or refused. Nothing is read when ``units`` or
    ``fs`` is missing.
    """
    # Read through our own handle: np.load leaks its file when the zip is corrupt. And check
    # the zip header first, since np.load unpickles any other file when allow_pickle is set.
    with path.open("rb") as handle:
        if not handle.read(len(_ZIP_HEADERS[0])).startswith(_ZIP_HEADERS):
            raise FileFormatError(
                f"{path} is not an .npz archive (no zip header): write it with numpy.savez"
            )
        with _readable(path):
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as archive:
                found = sorted(archive.files)
                if not {"units", "fs"} <= set(found):
                    return found, {}
                arrays, pickled = _plain_arrays(archive, [k for k in _READ_KEYS if k in found])
        if pickled:
            _check_trusted(path, pickled, allow_pickle)
            with _readable(path):
                handle.seek(0)
                with np.load(handle, allow_pickle=True) as archive:
                    arrays.update({key: archive[key] for key in pickled})
    return found, arrays


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn numpy's and zipfile's errors on a damaged archive into FileFormatError."""
    try:
        yield
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise FileFormatError(f"{path} is not a readable .npz file ({error})") from error


def _plain_arrays(archive: Any, keys: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read ``keys`` without pickle; return those arrays and the keys that need pickle."""
    arrays, pickled = {}, []
    for key in keys:
        try:
            arrays[key] = archive[key]
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise
            pickled.append(key)
    return arrays, pickled


def _check_trusted(path: Path, keys: list[str], allow_pickle: bool) -> None:
    """Refuse, or warn about, unpickling ``keys`` of ``path``."""
    named = ", ".join(repr(key) for key in keys)
    if not allow_pickle:
        raise UntrustedPickleError(
            f"{path}: {named} holds Python objects that only pickle can read, and unpickling "
            "can run code; refused because allow_pickle=False. If you trust this file, load "
            "it with allow_pickle=True"
        )
    warnings.warn(
        f"unpickling {named} of {path}: a pickle can run any code it holds, so load only "
        ".npz files you trust (allow_pickle=False refuses them)",
        UnpicklingWarning,
        stacklevel=4,
    )


def _sampling_rate(fs: np.ndarray, path: Path) -> float:
    """Return the single, positive, finite rate stored in ``fs``, or raise naming ``path``."""
    if fs.size != 1:
        raise FileFormatError(f"{path}: fs must hold one sampling rate in Hz, got shape {fs.shape}")
    try:
        return check_sampling_rate(fs.item(), what="the fs entry")
    except ValueError as error:
        raise FileFormatError(f"{path}: {error}") from error


def _unit_attributes(unit: dict[str, Any], index: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {"unit_id": python_value(unit.get("unit_id", index))}
    if "x_max" in unit and "y_max" in unit:
        attributes["location"] = [float(unit["x_max"]), float(unit["y_max"])]
    for name in _UNIT_FIELDS:
        if name in unit:
            attributes[name] = python_value(unit[name])
    return attributes
