"""Read an NWB file's Units table and file-level metadata: local, remote or Zarr."""

from __future__ import annotations

import os
import warnings
from datetime import date, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from spikelab._optional import import_optional, is_installed
from spikelab.exceptions import (
    ExternalLinkError,
    FileFormatError,
    NoUnitsError,
    RemoteError,
    StreamingError,
)
from spikelab.http import redact
from spikelab.loaders._common import (
    errors_naming,
    existing_file,
    file_attribute,
    first_given,
    open_hdf5,
)
from spikelab.loaders.nwb import _h5py, _pynwb
from spikelab.loaders.nwb._checks import text_value
from spikelab.loaders.nwb._links import (
    check_hdf5_links,
    check_whole_hdf5_file,
    check_zarr_store,
)
from spikelab.loaders.nwb._remote_hdf5 import is_url, open_remote_hdf5
from spikelab.loaders.nwb._table import (
    METADATA_KEYS,
    ElectrodesColumns,
    NoSpikeTimes,
    UnitsColumns,
    unit_attributes,
)
from spikelab.spikedata import SpikeData
from spikelab.units import ms_per

_NWB_FILE = "NWB/HDF5 file"


def load_spikedata_from_nwb(
    filepath: str | os.PathLike[str],
    *,
    prefer_pynwb: bool = True,
    length_ms: float | None = None,
    start_time_ms: float | None = None,
    allow_no_units: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    allow_external_links: bool = False,
) -> SpikeData:
    """Load the spike trains of an NWB file's Units table, from a path, a URL or a Zarr folder.

    Spike times and their ragged index are read as two whole arrays and split by offset,
    never one read per unit. A URL is streamed with HTTP range requests (through spikelab's
    session, its timeouts and retries) by the h5py reader: only the Units table, the
    electrodes rows and the file metadata are fetched, never ElectricalSeries data. A
    Zarr-backed NWB folder (``*.nwb.zarr``, written by hdmf-zarr) is read through
    ``hdmf_zarr.NWBZarrIO``.

    Each unit carries its id, every scalar Units column (quality metrics, names, object
    references as the referenced object's name ...), and from its first electrodes row
    ``electrode`` (the electrode id), ``location_label``, ``group_name`` and ``location``
    ([x, y, z], numbers only). A Units column named like one of those keys never overwrites
    it: a text ``location`` (a region such as ``'CA1'``) becomes ``location_label`` when the
    electrodes table gives none, else ``units_location``; likewise ``units_<name>`` for the
    others. An ``electrode_group`` column gives ``group_name`` when the electrodes do not.
    Columns stored with the pickle codec (hdmf-zarr's references) are never decoded.

    Parameters
    ----------
    filepath : str or PathLike
        The NWB (HDF5) file, an ``http(s)://`` URL of one on a server that honours Range, or
        a local Zarr NWB folder.
    prefer_pynwb : bool, default: True
        Read through pynwb when it is installed; any pynwb failure falls back to h5py with
        a warning. False reads with h5py directly. Zarr folders are always read with
        hdmf-zarr (it builds pynwb objects).
    length_ms : float | None, default: None
        Recording length; otherwise the file's ``length_ms`` attribute (written by
        :func:`spikelab.io.export_spikedata_to_nwb`), else the last spike.
    start_time_ms : float | None, default: None
        Recording start; otherwise the file's ``start_time`` attribute, else 0.
    allow_no_units : bool, default: False
        Return N=0 with the file metadata filled when the file has no Units table, or one
        without spike times (that case also warns), instead of raising.
    cache_dir : str or PathLike or None, default: None
        For URLs: a folder keeping the fetched chunks for later reads of the same URL
        (nothing is written to disk without it).
    allow_external_links : bool, default: False
        Follow the HDF5 external links of a local file (to other files on this machine),
        Zarr links to other stores and symlinks leaving a Zarr folder. Only for trusted
        local files: a file is otherwise read only from itself, and a URL's links are never
        followed whatever this says.

    Returns
    -------
    SpikeData
        Metadata: ``source_file``, ``format`` ("nwb"), ``reader`` ("pynwb" or "h5py"),
        ``identifier``, ``session_description``, ``session_start_time`` (ISO),
        ``subject_id``, ``species``, ``sex``, ``age``, ``date_of_birth`` (ISO),
        ``device_names`` (sorted), ``sampling_rate_hz`` and ``duration_seconds`` (first
        ElectricalSeries, else the given or stored ``length_ms``; never guessed from the
        spikes), ``unit_count`` and ``electrodes_by_channel``; None where the file does not
        say. ``reader`` is "hdmf-zarr" for Zarr folders. URLs add ``transfer``
        ("streamed"), ``bytes_read`` and ``digest_verified`` (False: a streamed read cannot
        check the whole file).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    NoUnitsError
        (a ValueError) No Units table, or Units without spike times, without
        ``allow_no_units``.
    FileFormatError
        (a ValueError) A file that is not readable HDF5 or Zarr NWB, or whose Units break a
        rule: text where numbers belong, columns of different lengths, a spike index that
        is fractional, decreasing or past the end of the times, a column that declares
        more values than the file stores.
    ExternalLinkError
        (a ValueError) The file links outside itself: an HDF5 external link (or a column
        stored in other files) without ``allow_external_links``, a soft link that dangles
        or leaves the Units or electrodes group, a Zarr link, reference or symlink leading
        outside the store. Checked before anything is read, also before pynwb opens it.
    ImportError
        A Zarr folder without hdmf-zarr installed (``pip install 'spikelab[nwbzarr]'``).
    """
    ladders: dict[str, Any] = {
        "length_ms": length_ms,
        "start_time_ms": start_time_ms,
        "allow_no_units": allow_no_units,
    }
    if is_url(filepath):
        return load_remote_nwb(str(filepath), cache_dir=cache_dir, **ladders)
    if Path(filepath).is_dir():
        folder = Path(filepath)
        zarr_contents = _read_zarr(folder, str(folder), allow_external_links=allow_external_links)
        return assemble(str(folder), *zarr_contents, **ladders)
    path = existing_file(filepath, "NWB file")
    source = str(path)
    contents = None
    if prefer_pynwb and is_installed("pynwb"):
        try:
            contents = _read_with_pynwb(path, source, allow_external_links=allow_external_links)
        except (FileFormatError, ExternalLinkError):
            raise
        except Exception as error:  # noqa: BLE001 - any pynwb failure falls back to h5py
            warnings.warn(
                f"pynwb could not read {source} ({type(error).__name__}: {_reason(error)}); "
                "reading it with h5py instead",
                UserWarning,
                stacklevel=2,
            )
    if contents is None:
        contents = _read_with_h5py(path, source, allow_external_links=allow_external_links)
    return assemble(source, *contents, **ladders)


def _reason(error: Exception, limit: int = 300) -> str:
    """An exception's own words, short: hdmf's errors carry a dump of the whole table first."""
    reason = next((arg for arg in reversed(error.args) if isinstance(arg, str)), str(error))
    return reason if len(reason) <= limit else f"{reason[: limit - 3]}..."


def load_remote_nwb(
    url: str,
    *,
    size_bytes: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **ladders: Any,
) -> SpikeData:
    """Stream an NWB file's Units from ``url`` (see :func:`load_spikedata_from_nwb`).

    ``size_bytes``, the file's size when the caller knows it, saves a round trip. The
    file's links are checked before anything is read: one that leads outside the file
    raises :class:`ExternalLinkError` (never a StreamingError, so no download follows).
    """
    with open_remote_hdf5(url, size_bytes=size_bytes, cache_dir=cache_dir) as remote:
        try:
            check_hdf5_links(remote.handle, redact(url), remote=True)
            if not remote.cached_whole:  # a small file came whole with its edges
                remote.prefetch(_h5py.datasets_read(remote.handle))
            contents = _read_checked_h5py(remote.handle, redact(url))
        except (RemoteError, ExternalLinkError):
            raise
        except FileFormatError as error:  # broken bytes or columns: a download may tell
            raise StreamingError(str(error)) from error
        except (OSError, KeyError) as error:  # h5py on broken metadata, while prefetching
            raise StreamingError(
                f"{redact(url)}: cannot read the NWB structure ({error})"
            ) from error
        bytes_read = remote.bytes_read
    sd = assemble(redact(url), *contents, **ladders)
    sd.metadata.update(transfer="streamed", bytes_read=bytes_read, digest_verified=False)
    return sd


Contents = tuple[UnitsColumns | NoSpikeTimes | None, ElectrodesColumns | None, dict[str, Any], str]


def has_electrical_series(nwb_path: str | os.PathLike[str]) -> bool:
    """Tell whether an NWB file holds an ElectricalSeries in ``acquisition`` (raw traces).

    Only the file itself is looked at: an external link in ``acquisition`` is not followed.
    """
    with open_hdf5(Path(nwb_path), _NWB_FILE) as handle:
        acquisition = handle.get("acquisition")
        if not isinstance(acquisition, h5py.Group):
            return False
        return any(
            text_value(item.attrs.get("neurodata_type")) == "ElectricalSeries"
            for name in acquisition.keys()
            if not isinstance(acquisition.get(name, getlink=True), h5py.ExternalLink)
            and (item := acquisition.get(name)) is not None
        )


def _read_with_pynwb(path: Path, source: str, *, allow_external_links: bool) -> Contents:
    pynwb = import_optional("pynwb", "nwb")
    with open_hdf5(path, _NWB_FILE) as handle:
        # pynwb builds every object of the file: every link is checked before it opens it
        check_whole_hdf5_file(handle, source, allow_external=allow_external_links)
        with pynwb.NWBHDF5IO(file=handle, mode="r", load_namespaces=True) as io:
            return _pynwb_contents(io.read(), handle, source, "pynwb")


def _pynwb_contents(nwbfile: Any, root: Any, source: str, reader: str) -> Contents:
    """Units, electrodes and metadata of an NWBFile object; ``root`` holds the file attributes."""
    metadata = _pynwb.read_metadata(nwbfile)
    metadata.update(_file_attributes(root))
    units = _pynwb.read_units(nwbfile, source)
    electrodes = _pynwb.read_electrodes(nwbfile, source)
    return units, electrodes, metadata, reader


def _read_zarr(folder: Path, source: str, *, allow_external_links: bool) -> Contents:
    """Read a Zarr-backed NWB folder (written by hdmf-zarr's NWBZarrIO)."""
    if not any((folder / marker).is_file() for marker in (".zgroup", "zarr.json")):
        raise FileFormatError(
            f"{source} is a folder but not a Zarr store (no .zgroup or zarr.json in it); "
            "pass an .nwb file or an .nwb.zarr folder written by hdmf-zarr"
        )
    check_zarr_store(folder, source, allow_external=allow_external_links)
    hdmf_zarr = import_optional("hdmf_zarr", "nwbzarr")
    zarr = import_optional("zarr", "nwbzarr")
    try:
        with hdmf_zarr.NWBZarrIO(str(folder), mode="r") as io:
            return _pynwb_contents(
                io.read(), zarr.open_group(str(folder), mode="r"), source, "hdmf-zarr"
            )
    except (FileFormatError, ExternalLinkError):
        raise
    except Exception as error:  # noqa: BLE001 - hdmf-zarr raises many kinds; name them all
        raise FileFormatError(
            f"{source}: hdmf-zarr could not read this Zarr NWB folder "
            f"({type(error).__name__}: {_reason(error)})"
        ) from error


def _read_with_h5py(path: Path, source: str, *, allow_external_links: bool) -> Contents:
    with open_hdf5(path, _NWB_FILE) as handle:
        return read_h5py_contents(handle, source, allow_external_links=allow_external_links)


def read_h5py_contents(
    handle: h5py.File, source: str, *, remote: bool = False, allow_external_links: bool = False
) -> Contents:
    """Read Units, electrodes and metadata from an open h5py file (local or remote).

    The links of the groups read are checked first (see :func:`check_hdf5_links`): a
    ``remote`` file's links never leave it; a local one's external links are followed only
    with ``allow_external_links``.
    """
    try:
        check_hdf5_links(handle, source, remote=remote, allow_external=allow_external_links)
    except (OSError, KeyError) as error:
        raise FileFormatError(f"{source}: cannot read the NWB structure ({error})") from error
    return _read_checked_h5py(handle, source)


def _read_checked_h5py(handle: h5py.File, source: str) -> Contents:
    """:func:`read_h5py_contents` once the file's links are checked."""
    try:
        metadata = _h5py.read_metadata(handle)
        metadata.update(_file_attributes(handle))
        units = _h5py.read_units(handle, source)
        electrodes = _h5py.read_electrodes(handle, source)
    except (OSError, KeyError) as error:
        raise FileFormatError(f"{source}: cannot read the NWB structure ({error})") from error
    metadata["session_start_time"] = _normalized_iso(metadata["session_start_time"])
    metadata["date_of_birth"] = _normalized_iso(metadata["date_of_birth"])
    return units, electrodes, metadata, "h5py"


def _file_attributes(handle: Any) -> dict[str, Any]:
    """The root attributes spikelab's exporter writes (h5py file or zarr group)."""
    present = set(handle.attrs.keys())  # one look at the root; absent ones cost nothing more
    return {
        f"_{name}": file_attribute(handle, name) if name in present else None
        for name in ("length_ms", "start_time", "sampling_rate_hz")
    }


def _normalized_iso(value: Any) -> str | None:
    """Give h5py-read dates the same ISO form pynwb's datetime objects print."""
    if value is None:
        return None
    text = str(value)
    for parse in (datetime.fromisoformat, date.fromisoformat):
        try:
            return parse(text).isoformat()
        except ValueError:
            continue
    return text


def assemble(
    source: str,
    units: UnitsColumns | NoSpikeTimes | None,
    electrodes: ElectrodesColumns | None,
    metadata: dict[str, Any],
    reader: str,
    *,
    length_ms: float | None,
    start_time_ms: float | None,
    allow_no_units: bool,
) -> SpikeData:
    """Turn what a reader found into SpikeData, applying the length and start ladders."""
    file_length, file_start = metadata.pop("_length_ms"), metadata.pop("_start_time")
    file_rate = metadata.pop("_sampling_rate_hz")
    if isinstance(units, NoSpikeTimes):
        _without_spike_times(source, units, allow_no_units)
        units = None
    if units is None and not allow_no_units:
        raise NoUnitsError(
            f"{source} has no Units table (no spike sorting results); pass "
            "allow_no_units=True to load only its metadata"
        )
    if units is not None:
        ends = units.spike_ends
        times_s = units.spike_times_s[: ends[-1] if ends.size else 0]
        attributes = unit_attributes(units, electrodes)
    else:
        times_s, ends, attributes = np.empty(0), np.empty(0, dtype=np.int64), []
    full_metadata = {key: metadata.get(key) for key in METADATA_KEYS}
    if full_metadata["sampling_rate_hz"] is None:
        full_metadata["sampling_rate_hz"] = file_rate
    full_metadata.update(
        source_file=source,
        format="nwb",
        reader=reader,
        unit_count=ends.size,
        electrodes_by_channel=electrodes.by_channel() if electrodes is not None else {},
    )
    length = first_given(length_ms, file_length)
    with errors_naming(source):
        sd = SpikeData.from_flat(
            times_s,
            ends,
            scale=ms_per("s"),
            length=length,
            start_time=first_given(start_time_ms, file_start, 0.0),
            neuron_attributes=attributes,
            metadata=full_metadata,
        )
    if sd.metadata["duration_seconds"] is None and length is not None:
        sd.metadata["duration_seconds"] = length / 1000.0
    return sd


def _without_spike_times(source: str, units: NoSpikeTimes, allow_no_units: bool) -> None:
    """Refuse a Units table without spike times, or warn and load none (``allow_no_units``)."""
    message = (
        f"{source}: the Units table has no spike_times column with its spike_times_index "
        f"(columns: {units.columns}), so it holds no spike trains"
    )
    if not allow_no_units:
        raise NoUnitsError(f"{message}; pass allow_no_units=True to load only its metadata")
    warnings.warn(
        f"{message}; loaded with no units (allow_no_units=True)", UserWarning, stacklevel=4
    )
