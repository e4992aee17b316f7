"""An NWB file's raw ElectricalSeries, saved as a SpikeInterface Zarr recording."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spikelab._optional import import_optional
from spikelab.io.atomic import atomic_write
from spikelab.loaders.nwb import SESSION_KEYS, load_spikedata_from_nwb


def zarr_destination(zarr_dest: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """``zarr_dest`` made absolute; FileExistsError if it exists and ``overwrite`` is False."""
    destination = Path(zarr_dest).absolute()
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} exists; pass overwrite=True to replace it")
    return destination


def save_nwb_recording_as_zarr(
    nwb_path: str | os.PathLike[str],
    zarr_dest: str | os.PathLike[str],
    *,
    electrical_series_path: str | None = None,
    overwrite: bool = False,
    save_kwargs: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Save an NWB file's ElectricalSeries as SpikeInterface Zarr, with a JSON sidecar.

    The Zarr is written under a temporary name beside ``zarr_dest`` and swapped into place,
    so a failed conversion leaves nothing half-written. The sidecar ``<zarr_dest>.json``
    holds the recording's shape, the NWB session and subject fields and ``provenance``.

    Parameters
    ----------
    nwb_path : str or PathLike
        The NWB file.
    zarr_dest : str or PathLike
        The Zarr folder to create.
    electrical_series_path : str | None, default: None
        Which series (e.g. ``"acquisition/ElectricalSeriesAP"``) when there are several.
    overwrite : bool, default: False
        Replace an existing ``zarr_dest``.
    save_kwargs : mapping | None, default: None
        Passed to SpikeInterface's ``BaseRecording.save``.
    provenance : mapping | None, default: None
        Extra fields for the result and the sidecar (e.g. DANDI ids).

    Returns
    -------
    dict
        ``zarr_path``, ``recording_metadata_path``, ``sampling_rate_hz``, ``n_channels``,
        ``n_samples``, ``duration_seconds``, the session fields and ``provenance``.

    Raises
    ------
    FileExistsError
        ``zarr_dest`` exists and ``overwrite`` is False.
    ImportError
        spikeinterface is not installed.
    ValueError
        The file has no ElectricalSeries SpikeInterface can open.
    """
    destination = zarr_destination(zarr_dest, overwrite=overwrite)
    extractors = import_optional("spikeinterface.extractors", "sorting")
    nwb_metadata = load_spikedata_from_nwb(nwb_path, allow_no_units=True).metadata
    try:
        recording = extractors.read_nwb_recording(
            str(nwb_path), electrical_series_path=electrical_series_path
        )
    except (ValueError, KeyError, AssertionError) as error:
        raise ValueError(
            f"{Path(nwb_path).name}: no ElectricalSeries SpikeInterface can open ({error}); "
            "pass electrical_series_path to choose one"
        ) from error
    _save_zarr(recording, destination, dict(save_kwargs or {}))
    rate = float(recording.get_sampling_frequency())
    n_samples = int(recording.get_num_samples(0))
    result: dict[str, Any] = {
        "zarr_path": str(destination),
        "recording_metadata_path": str(destination.with_name(destination.name + ".json")),
        "sampling_rate_hz": rate,
        "n_channels": int(recording.get_num_channels()),
        "n_samples": n_samples,
        "duration_seconds": n_samples / rate,
        **dict(provenance or {}),
        **{key: nwb_metadata.get(key) for key in SESSION_KEYS},
    }
    write_sidecar(result)
    return result


def write_sidecar(result: Mapping[str, Any]) -> None:
    """Write the conversion result as the JSON sidecar it names, atomically."""
    with atomic_write(result["recording_metadata_path"]) as handle:
        handle.write(json.dumps(dict(result), indent=2).encode())


def _save_zarr(recording: Any, destination: Path, save_kwargs: dict[str, Any]) -> None:
    """Save to a temporary Zarr folder beside ``destination``, then swap it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    written = staging / "recording.zarr"  # SpikeInterface insists on the .zarr suffix
    try:
        recording.save(format="zarr", folder=written, **save_kwargs)
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(written, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
