"""One contract every loader in the registry runs: ids, times in ms, sorted trains, empty input,
the metadata it documents.

SpikeInterface's ``SortingCommonTestSuite`` is the idea: a new source is checked the same way
as the old ones. Each contract writes a small input with the real writer (pynwb, ``np.save``
for Phy folders, h5py, ``write_spikelab_npz``, pickle, SpikeInterface's Numpy objects) into
``tmp_path``, knowing every spike time in seconds; the loader must give exactly those times
times 1000, in sorted trains, with the unit ids and the metadata fields its docstring names.
An empty input (no units, or units without spikes) must do what the docstring says: give
N = 0, give units with empty trains, or raise the named error.

DANDI and IBL need the network for their real servers: they run here against the local
stand-ins (``DandiStandIn`` on 127.0.0.1, ONE in local mode over an on-disk ALF cache), which
is the local part of each loader (client, verified download and NWB read; collection search,
ALF read and Brain-Wide Map table). Their ids say so (``[stand-in]``) and ``OFFLINE`` gives
the reason.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import h5py
import numpy as np
import pytest
from nwb_fixtures import START, no_units_file, units_file

from spikelab import loaders
from spikelab.exceptions import NoUnitsError, UnpicklingWarning
from spikelab.io import export_to_pickle
from spikelab.io.lake_export import write_spikelab_npz
from spikelab.spikedata import SpikeData

# Why a source is checked through a stand-in here rather than against its real server.
OFFLINE = {
    "dandi": "the DANDI archive needs the network: served by DandiStandIn on 127.0.0.1",
    "ibl": "the IBL servers need the network: ONE in local mode over an on-disk ALF cache",
}

NO_UNITS = "N == 0"
NO_SPIKES = "every unit's train is empty"


@dataclass(frozen=True)
class Raises:
    """The documented error an input gives: its type and a pattern of its message."""

    error: type[Exception]
    match: str


@dataclass(frozen=True)
class Contract:
    """What one loader promises for a small input it can read, and for an empty one.

    ``read(folder, **options)`` writes the input with the real writer and loads it;
    ``read_empty`` does the same for an input without units or without spikes, and
    ``empty`` lists (options, what the docstring says happens) for it.
    """

    source: str
    read: Callable[..., SpikeData]
    unit_ids: list[Any] | None  # None: the format names no units (position is identity)
    times_s: list[list[float]]  # sorted, per unit, in seconds
    metadata: dict[str, Any]  # every field the docstring names -> its value (or ANY)
    attributes: frozenset[str]  # keys every unit carries
    read_empty: Callable[..., SpikeData]
    empty: tuple[tuple[dict[str, Any], str | Raises], ...]
    warns: type[Warning] | None = None  # a warning every load gives by design
    empty_units: int = 0  # with NO_SPIKES: how many units the empty input still has
    options: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ NWB (and DANDI)

NWB_UNITS_S = {11: [0.5, 0.25, 1.0], 12: [2.0], 13: []}  # unsorted, one spike, none
NWB_METADATA = {
    "source_file": ANY,
    "format": "nwb",
    "identifier": "contract",
    "session_description": "s",
    "session_start_time": START.isoformat(),
    "subject_id": None,
    "species": None,
    "sex": None,
    "age": None,
    "date_of_birth": None,
    "device_names": [],
    "sampling_rate_hz": None,
    "duration_seconds": None,
    "unit_count": 3,
    "electrodes_by_channel": ANY,
}
NWB_EMPTY: tuple[tuple[dict[str, Any], str | Raises], ...] = (
    ({}, Raises(NoUnitsError, r"raw\.nwb has no Units table.*allow_no_units=True")),
    ({"allow_no_units": True}, NO_UNITS),
)


def nwb_read(prefer_pynwb: bool) -> Callable[..., SpikeData]:
    def read(folder: Path, **options: Any) -> SpikeData:
        path = units_file(folder / "units.nwb", NWB_UNITS_S, identifier="contract")
        return loaders.LOADERS["nwb"](path, prefer_pynwb=prefer_pynwb, **options)

    return read


def nwb_read_empty(prefer_pynwb: bool) -> Callable[..., SpikeData]:
    def read(folder: Path, **options: Any) -> SpikeData:
        path = no_units_file(folder / "raw.nwb")
        return loaders.LOADERS["nwb"](path, prefer_pynwb=prefer_pynwb, **options)

    return read


def nwb_contract(prefer_pynwb: bool) -> Contract:
    reader = "pynwb" if prefer_pynwb else "h5py"
    return Contract(
        source="nwb",
        read=nwb_read(prefer_pynwb),
        unit_ids=list(NWB_UNITS_S),
        times_s=[sorted(times) for times in NWB_UNITS_S.values()],
        metadata={**NWB_METADATA, "reader": reader},
        attributes=frozenset({"unit_id"}),
        read_empty=nwb_read_empty(prefer_pynwb),
        empty=NWB_EMPTY,
    )


def dandi_served(folder: Path, path: Path, **options: Any) -> SpikeData:
    """Serve ``path`` as an asset of dandiset 000001 on the stand-in and load it."""
    from spikelab.testing import DandiStandIn

    with DandiStandIn(folder / "archive") as archive:
        asset_id = archive.add_asset("000001", "sub-1/units.nwb", path)
        return loaders.LOADERS["dandi"](asset_id, api_base=archive.api_base, **options)


def dandi_read(folder: Path, **options: Any) -> SpikeData:
    path = units_file(folder / "units.nwb", NWB_UNITS_S, identifier="contract")
    return dandi_served(folder, path, **options)


def dandi_read_empty(folder: Path, **options: Any) -> SpikeData:
    return dandi_served(folder, no_units_file(folder / "raw.nwb"), **options)


DANDI = Contract(
    source="dandi",
    read=dandi_read,
    unit_ids=list(NWB_UNITS_S),
    times_s=[sorted(times) for times in NWB_UNITS_S.values()],
    metadata={
        **NWB_METADATA,
        "reader": "pynwb",
        "dandi_asset_id": ANY,
        "dandi_version": "draft",
        "dandi_path": "sub-1/units.nwb",
        "dandi_digest": ANY,
        "source_reference": ANY,
        "transfer": "downloaded",
        "bytes_read": ANY,
        "digest_verified": True,
    },
    attributes=frozenset({"unit_id"}),
    read_empty=dandi_read_empty,
    empty=(
        ({}, Raises(NoUnitsError, r"has no Units table.*allow_no_units=True")),
        ({"allow_no_units": True}, NO_UNITS),
    ),
)


# ------------------------------------------------------------------ KiloSort / Phy folder

KILOSORT_FS_HZ = 30000.0
KILOSORT_SAMPLES = [15000, 7500, 45000, 30000]  # not in time order within cluster 3
KILOSORT_CLUSTERS = [3, 3, 7, 3]


def kilosort_read(folder: Path, **options: Any) -> SpikeData:
    np.save(folder / "spike_times.npy", np.array(KILOSORT_SAMPLES, dtype=np.uint64))
    np.save(folder / "spike_clusters.npy", np.array(KILOSORT_CLUSTERS, dtype=np.int32))
    return loaders.LOADERS["kilosort"](folder, fs_Hz=KILOSORT_FS_HZ, **options)


def kilosort_read_empty(folder: Path, **options: Any) -> SpikeData:
    np.save(folder / "spike_times.npy", np.array([], dtype=np.uint64))
    np.save(folder / "spike_clusters.npy", np.array([], dtype=np.int32))
    return loaders.LOADERS["kilosort"](folder, fs_Hz=KILOSORT_FS_HZ, **options)


KILOSORT = Contract(
    source="kilosort",
    read=kilosort_read,
    unit_ids=[3, 7],
    times_s=[
        sorted(
            s / KILOSORT_FS_HZ
            for s, c in zip(KILOSORT_SAMPLES, KILOSORT_CLUSTERS, strict=True)
            if c == u
        )
        for u in (3, 7)
    ],
    metadata={
        "source_file": ANY,
        "format": "kilosort",
        "cluster_ids": [3, 7],
        "label_source": [],
        "clusters_file": "spike_clusters.npy",
    },
    attributes=frozenset({"unit_id", "label", "label_source"}),
    read_empty=kilosort_read_empty,
    empty=(({}, NO_UNITS),),  # no clusters: no units (the docstring does not say)
)


# ------------------------------------------------------------------ HDF5 (three styles)

HDF5_IDCES = [2, 0, 2, 1, 0]
HDF5_TIMES_S = [1.0, 0.5, 0.25, 0.75, 1.5]  # unsorted
HDF5_TRAINS_S = [
    sorted(t for t, i in zip(HDF5_TIMES_S, HDF5_IDCES, strict=True) if i == u) for u in range(3)
]
HDF5_METADATA = {"source_file": ANY, "format": "hdf5"}


def hdf5_paired(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "paired.h5", "w") as handle:
        handle["i"] = HDF5_IDCES
        handle["t"] = HDF5_TIMES_S
    return loaders.LOADERS["hdf5"](
        folder / "paired.h5", idces_dataset="i", times_dataset="t", **options
    )


def hdf5_paired_empty(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "paired.h5", "w") as handle:
        handle["i"] = np.array([], dtype=np.int64)
        handle["t"] = np.array([], dtype=np.float64)
    return loaders.LOADERS["hdf5"](
        folder / "paired.h5", idces_dataset="i", times_dataset="t", **options
    )


def hdf5_ragged(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "ragged.h5", "w") as handle:
        handle["st"] = [t for train in HDF5_TRAINS_S for t in train[::-1]]  # each unit reversed
        handle["sti"] = np.cumsum([len(train) for train in HDF5_TRAINS_S])
    return loaders.LOADERS["hdf5"](
        folder / "ragged.h5", spike_times_dataset="st", spike_times_index_dataset="sti", **options
    )


def hdf5_ragged_empty(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "ragged.h5", "w") as handle:
        handle["st"] = np.array([], dtype=np.float64)
        handle["sti"] = np.array([], dtype=np.int64)
    return loaders.LOADERS["hdf5"](
        folder / "ragged.h5", spike_times_dataset="st", spike_times_index_dataset="sti", **options
    )


def hdf5_groups(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "groups.h5", "w") as handle:
        units = handle.create_group("units")
        for index, train in enumerate(HDF5_TRAINS_S):
            units[f"unit{index}"] = train[::-1]
    return loaders.LOADERS["hdf5"](folder / "groups.h5", group_per_unit="units", **options)


def hdf5_groups_empty(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "groups.h5", "w") as handle:
        handle.create_group("units")
    return loaders.LOADERS["hdf5"](folder / "groups.h5", group_per_unit="units", **options)


def hdf5_contract(read, read_empty, style: str, unit_ids: list[Any] | None) -> Contract:
    return Contract(
        source="hdf5",
        read=read,
        unit_ids=unit_ids,
        times_s=HDF5_TRAINS_S,
        metadata={**HDF5_METADATA, "hdf5_style": style},
        attributes=frozenset({"unit_id"}) if unit_ids is not None else frozenset(),
        read_empty=read_empty,
        empty=(({}, NO_UNITS),),
    )


# ------------------------------------------------------------------ raw traces, thresholded

RAW_FS_HZ = 1000.0
RAW_EVENTS = {0: [2, 1], 1: [3]}  # channel -> samples beyond the threshold


def raw_traces(n_samples: int = 50) -> np.ndarray:
    traces = np.zeros((len(RAW_EVENTS), n_samples))
    traces[0, RAW_EVENTS[0]] = 50.0
    traces[1, RAW_EVENTS[1]] = -50.0
    return traces


RAW_OPTIONS = {"filter": False, "hysteresis": False, "threshold_sigma": 3.0}


def hdf5_raw_read(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "raw.h5", "w") as handle:
        handle["x"] = raw_traces()
    return loaders.LOADERS["hdf5_raw_thresholded"](
        folder / "raw.h5", "x", fs_Hz=RAW_FS_HZ, **RAW_OPTIONS, **options
    )


def hdf5_raw_read_empty(folder: Path, **options: Any) -> SpikeData:
    with h5py.File(folder / "flat.h5", "w") as handle:
        handle["x"] = np.zeros((2, 50))
    return loaders.LOADERS["hdf5_raw_thresholded"](
        folder / "flat.h5", "x", fs_Hz=RAW_FS_HZ, **RAW_OPTIONS, **options
    )


RAW_TIMES_S = [sorted(s / RAW_FS_HZ for s in samples) for samples in RAW_EVENTS.values()]

HDF5_RAW = Contract(
    source="hdf5_raw_thresholded",
    read=hdf5_raw_read,
    unit_ids=[0, 1],
    times_s=RAW_TIMES_S,
    metadata={
        "source_file": ANY,
        "format": "hdf5_raw_thresholded",
        "threshold_sigma": 3.0,
        "filter": False,
        "direction": "both",
    },
    attributes=frozenset({"unit_id", "electrode", "threshold"}),
    read_empty=hdf5_raw_read_empty,
    empty=(({}, NO_SPIKES),),  # one unit per channel, also without spikes
    empty_units=2,
)


# ------------------------------------------------------------------ IBL (ONE, local mode)

PRIMARY = ("s0", "probe00")  # the cache's probe with failing, silent and good clusters


def ibl_known_times() -> tuple[list[int], list[list[float]]]:
    """The primary probe's good clusters and their spike times (s), from the cache's tables."""
    from ibl_cache import GOOD_UNITS, PRIMARY_CLUSTERS, PRIMARY_TIMES_S

    good = [cluster for cluster, _, _ in GOOD_UNITS[PRIMARY]]
    times = [
        sorted(t for t, c in zip(PRIMARY_TIMES_S, PRIMARY_CLUSTERS, strict=True) if c == unit)
        for unit in good
    ]
    return good, times


def ibl_read(folder: Path, *, only_silent: bool = False, **options: Any) -> SpikeData:
    from ibl_cache import PIDS, build_ibl_cache, units_table

    cache = build_ibl_cache(folder)
    table = units_table(cache.eids)
    if only_silent:  # the primary probe keeps only cluster 5, which never fires
        table = table[(table["pid"] != PIDS[PRIMARY]) | (table["cluster_id"] == 5)]
    return loaders.LOADERS["ibl"](
        cache.eids[PRIMARY[0]], PIDS[PRIMARY], one=cache.one, units_table=table, **options
    )


def ibl_read_empty(folder: Path, **options: Any) -> SpikeData:
    return ibl_read(folder, only_silent=True, **options)


IBL_UNITS, IBL_TIMES_S = ibl_known_times()
IBL = Contract(
    source="ibl",
    read=ibl_read,
    unit_ids=IBL_UNITS,
    times_s=IBL_TIMES_S,
    metadata={
        "eid": ANY,
        "pid": ANY,
        "identifier": ANY,
        "format": "IBL",
        "collection": "alf/probe00/pykilosort",
        "unit_count": len(IBL_UNITS),
        "duration_seconds": max(max(t) for t in IBL_TIMES_S if t),
        "n_trials": ANY,
        **dict.fromkeys(
            [
                "trial_start_times",
                "trial_end_times",
                "stim_on_times",
                "stim_off_times",
                "go_cue_times",
                "response_times",
                "feedback_times",
                "first_movement_times",
                "choice",
                "feedback_type",
                "contrast_left",
                "contrast_right",
                "probability_left",
                "electrodes_by_channel",
            ],
            ANY,
        ),
    },
    attributes=frozenset(
        {
            "unit_id",
            "cluster_id",
            "location_label",
            "beryl",
            "cosmos",
            "acronym",
            "atlas_id",
            "electrode",
            "location",
            "group_name",
            "cluster_uuid",
        }
    ),
    read_empty=ibl_read_empty,
    empty=(
        ({}, Raises(ValueError, r"has no spikes from good units .*: pass length_ms")),
        ({"length_ms": 4000.0}, NO_SPIKES),
    ),
    empty_units=1,
)


# ------------------------------------------------------------------ pickle, SpikeLab .npz

PICKLED_MS = [[250.0, 500.0], [], [1000.0]]
PICKLED_IDS = ["a", "b", "c"]


def pickle_read(folder: Path, **options: Any) -> SpikeData:
    sd = SpikeData(PICKLED_MS, neuron_attributes=[{"unit_id": u} for u in PICKLED_IDS])
    export_to_pickle(sd, folder / "sd.pkl")
    return loaders.LOADERS["pickle"](folder / "sd.pkl", **options)


def pickle_read_empty(folder: Path, **options: Any) -> SpikeData:
    with open(folder / "empty.pkl", "wb") as handle:
        pickle.dump(SpikeData([]), handle)
    return loaders.LOADERS["pickle"](folder / "empty.pkl", **options)


PICKLE = Contract(
    source="pickle",
    read=pickle_read,
    unit_ids=PICKLED_IDS,
    times_s=[[t / 1000.0 for t in train] for train in PICKLED_MS],
    metadata={},  # the pickled SpikeData's own metadata, nothing added
    attributes=frozenset({"unit_id"}),
    read_empty=pickle_read_empty,
    empty=(({}, NO_UNITS),),
    warns=UnpicklingWarning,
)


def npz_read(folder: Path, **options: Any) -> SpikeData:
    sd = SpikeData(PICKLED_MS, neuron_attributes=[{"unit_id": u} for u in PICKLED_IDS])
    write_spikelab_npz(sd, folder / "sorted.npz")
    return loaders.LOADERS["spikelab_npz"](folder / "sorted.npz", **options)


def npz_read_empty(folder: Path, **options: Any) -> SpikeData:
    write_spikelab_npz(SpikeData([]), folder / "empty.npz")
    return loaders.LOADERS["spikelab_npz"](folder / "empty.npz", **options)


NPZ = Contract(
    source="spikelab_npz",
    read=npz_read,
    unit_ids=PICKLED_IDS,
    times_s=[[t / 1000.0 for t in train] for train in PICKLED_MS],
    metadata={
        "source_file": ANY,
        "format": "spikelab_npz",
        "source_format": "SpikeLab_npz",
        "fs_Hz": 1000.0,
    },
    attributes=frozenset({"unit_id"}),
    read_empty=npz_read_empty,
    empty=(({}, NO_UNITS),),
    warns=UnpicklingWarning,
)


# ------------------------------------------------------------------ SpikeInterface objects

SI_FS_HZ = 10000.0
SI_UNITS = {"a": [5000, 2500], "b": [10000], "c": []}  # samples, "a" unsorted


def si_sorting(units: dict[str, list[int]]) -> Any:
    import spikeinterface.core as si

    trains = {unit: np.array(samples, dtype=np.int64) for unit, samples in units.items()}
    return si.NumpySorting.from_unit_dict([trains], sampling_frequency=SI_FS_HZ)


def si_read(folder: Path, **options: Any) -> SpikeData:
    return loaders.LOADERS["spikeinterface"](si_sorting(SI_UNITS), **options)


def si_read_empty(folder: Path, **options: Any) -> SpikeData:
    return loaders.LOADERS["spikeinterface"](si_sorting({}), **options)


SPIKEINTERFACE = Contract(
    source="spikeinterface",
    read=si_read,
    unit_ids=list(SI_UNITS),
    times_s=[sorted(s / SI_FS_HZ for s in samples) for samples in SI_UNITS.values()],
    metadata={
        "format": "spikeinterface",
        "source_class": "NumpySorting",
        "fs_Hz": SI_FS_HZ,
        "segment_index": 0,
    },
    attributes=frozenset({"unit_id"}),
    read_empty=si_read_empty,
    empty=(({}, NO_UNITS), ({"unit_ids": []}, NO_UNITS)),
)


def si_recording(traces: np.ndarray) -> Any:
    import spikeinterface.core as si

    return si.NumpyRecording([traces.T], sampling_frequency=RAW_FS_HZ)


def si_recording_read(folder: Path, **options: Any) -> SpikeData:
    recording = si_recording(raw_traces())
    return loaders.LOADERS["spikeinterface_recording"](
        recording, hysteresis=False, threshold_sigma=3.0, **options
    )


def si_recording_read_empty(folder: Path, **options: Any) -> SpikeData:
    recording = si_recording(np.zeros((2, 50)))
    return loaders.LOADERS["spikeinterface_recording"](
        recording, hysteresis=False, threshold_sigma=3.0, **options
    )


SPIKEINTERFACE_RECORDING = Contract(
    source="spikeinterface_recording",
    read=si_recording_read,
    unit_ids=[0, 1],
    times_s=RAW_TIMES_S,
    metadata={
        "format": "spikeinterface_recording",
        "source_class": "NumpyRecording",
        "fs_Hz": RAW_FS_HZ,
        "segment_index": 0,
        "threshold_sigma": 3.0,
        "direction": "both",
    },
    attributes=frozenset({"unit_id", "electrode", "threshold"}),
    read_empty=si_recording_read_empty,
    empty=(({}, NO_SPIKES),),  # "one unit per channel, also for channels without spikes"
    empty_units=2,
)


# ------------------------------------------------------------------ the parametrisation

CONTRACTS = [
    pytest.param(nwb_contract(prefer_pynwb=True), id="nwb-pynwb"),
    pytest.param(nwb_contract(prefer_pynwb=False), id="nwb-h5py"),
    pytest.param(KILOSORT, id="kilosort"),
    pytest.param(hdf5_contract(hdf5_paired, hdf5_paired_empty, "paired", None), id="hdf5-paired"),
    pytest.param(hdf5_contract(hdf5_ragged, hdf5_ragged_empty, "ragged", None), id="hdf5-ragged"),
    pytest.param(
        hdf5_contract(hdf5_groups, hdf5_groups_empty, "group", ["unit0", "unit1", "unit2"]),
        id="hdf5-group",
    ),
    pytest.param(NPZ, id="spikelab_npz"),
    pytest.param(PICKLE, id="pickle"),
    pytest.param(DANDI, id="dandi[stand-in]"),  # OFFLINE["dandi"]
    pytest.param(HDF5_RAW, id="hdf5_raw_thresholded"),
    pytest.param(IBL, id="ibl[stand-in]"),  # OFFLINE["ibl"]
    pytest.param(SPIKEINTERFACE, id="spikeinterface"),
    pytest.param(SPIKEINTERFACE_RECORDING, id="spikeinterface_recording"),
]


@contextmanager
def expected_warning(contract: Contract) -> Iterator[None]:
    with pytest.warns(contract.warns) if contract.warns else nullcontext():
        yield


@pytest.fixture(scope="module", params=CONTRACTS)
def loaded(request, tmp_path_factory) -> tuple[Contract, SpikeData]:
    """Each contract's fixture written and loaded once for the checks below."""
    contract: Contract = request.param
    with expected_warning(contract):
        sd = contract.read(tmp_path_factory.mktemp(contract.source))
    return contract, sd


def test_every_registered_source_has_a_contract():
    sources = [param.values[0].source for param in CONTRACTS]
    assert set(sources) == set(loaders.LOADERS)
    for param in CONTRACTS:
        contract = param.values[0]
        assert ("[stand-in]" in param.id) is (contract.source in OFFLINE)


def test_a_spikedata_of_the_fixture_units(loaded):
    contract, sd = loaded
    assert type(sd) is SpikeData
    assert sd.N == len(contract.times_s)
    ids = None if sd.neuron_attributes is None else [a["unit_id"] for a in sd.neuron_attributes]
    assert ids == contract.unit_ids


def test_times_are_the_fixture_times_in_ms(loaded):
    contract, sd = loaded
    for train, times_s in zip(sd.train, contract.times_s, strict=True):
        assert train.dtype == np.float64
        np.testing.assert_allclose(
            train, np.asarray(times_s, dtype=np.float64) * 1000.0, rtol=1e-12
        )


def test_trains_are_sorted(loaded):
    _, sd = loaded
    for train in sd.train:
        assert np.all(np.diff(train) >= 0), train


def test_the_documented_metadata_fields(loaded):
    contract, sd = loaded
    missing = set(contract.metadata) - set(sd.metadata)
    assert not missing, f"{contract.source}: documented metadata missing: {sorted(missing)}"
    for key, expected in contract.metadata.items():
        if expected is not ANY:  # ANY: the field must be there, its value is the input's
            assert sd.metadata[key] == expected, (contract.source, key)


def test_the_documented_unit_attributes(loaded):
    contract, sd = loaded
    for entry in sd.neuron_attributes or [{}] * sd.N:
        assert contract.attributes <= set(entry), (contract.source, entry)


@pytest.mark.parametrize("contract", CONTRACTS)
def test_an_empty_input_behaves_as_documented(contract, tmp_path):
    for number, (options, expected) in enumerate(contract.empty):
        folder = tmp_path / str(number)
        folder.mkdir()
        if isinstance(expected, Raises):
            with pytest.raises(expected.error, match=expected.match):
                with expected_warning(contract):
                    contract.read_empty(folder, **options)
            continue
        with expected_warning(contract):
            sd = contract.read_empty(folder, **options)
        assert type(sd) is SpikeData
        if expected == NO_UNITS:
            assert sd.N == 0 and sd.train == [], options
        else:
            assert sd.N == contract.empty_units, options
            assert all(train.size == 0 for train in sd.train), options


def test_raw_traces_without_channels(tmp_path):
    with h5py.File(tmp_path / "none.h5", "w") as handle:
        handle["x"] = np.zeros((0, 50))
    sd = loaders.LOADERS["hdf5_raw_thresholded"](tmp_path / "none.h5", "x", fs_Hz=RAW_FS_HZ)
    assert sd.N == 0  # no channel, no unit
