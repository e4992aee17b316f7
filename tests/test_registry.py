"""Every source in spikelab.loaders.LOADERS loads a real file; the upstream paths work."""

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import spikelab.data_loaders.data_loaders as upstream
from spikelab import loaders
from spikelab.exceptions import UnpicklingWarning
from spikelab.io import export_spikedata_to_nwb, export_to_pickle
from spikelab.spikedata import SpikeData

REPO = Path(__file__).parents[1]
SEED_API = Path(__file__).parents[2] / "shared" / "seed-api.md"
EXPECTED_MS = [[1.0, 2.0], [3.0]]
# What DANDI's checks need, so that exporting the NWB fixtures does not warn.
DANDI_READY = {
    "subject_id": "m1",
    "species": "Mus musculus",
    "sex": "M",
    "age": "P90D",
    "sampling_rate_hz": 30000.0,
}


def dandi_fixture(tmp_path):
    from spikelab.testing import DandiStandIn

    path = export_spikedata_to_nwb(
        SpikeData(EXPECTED_MS, metadata=DANDI_READY), tmp_path / "units.nwb"
    )
    with DandiStandIn(tmp_path) as archive:
        asset_id = archive.add_asset("000001", "sub-1/units.nwb", path)
        return loaders.LOADERS["dandi"](asset_id, api_base=archive.api_base)


def hdf5_fixture(tmp_path):
    path = tmp_path / "paired.h5"
    with h5py.File(path, "w") as handle:
        handle["i"] = [0, 0, 1]
        handle["t"] = [0.001, 0.002, 0.003]
    return loaders.LOADERS["hdf5"](path, idces_dataset="i", times_dataset="t")


def hdf5_raw_fixture(tmp_path):
    traces = np.zeros((2, 50))
    traces[0, [1, 2]] = 50.0
    traces[1, 3] = -50.0
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = traces
    return loaders.LOADERS["hdf5_raw_thresholded"](
        path, "x", fs_Hz=1000.0, filter=False, hysteresis=False, threshold_sigma=3.0
    )


def ibl_fixture(tmp_path):
    from ibl_cache import PIDS, build_ibl_cache, units_table

    cache = build_ibl_cache(tmp_path)
    table = units_table(cache.eids)
    sd = loaders.LOADERS["ibl"](
        cache.eids["s0"], PIDS[("s0", "probe00")], one=cache.one, units_table=table
    )
    # the primary probe's good clusters 0, 2, 4 and 5 (which never fires)
    return sd, [[250.0, 1250.0, 3000.0], [125.0, 750.0, 2000.0], [1500.0], []]


def kilosort_fixture(tmp_path):
    np.save(tmp_path / "spike_times.npy", np.array([30, 60, 90], dtype=np.uint64))
    np.save(tmp_path / "spike_clusters.npy", np.array([0, 0, 1], dtype=np.int32))
    return loaders.LOADERS["kilosort"](tmp_path, fs_Hz=30000.0)


def nwb_fixture(tmp_path):
    path = export_spikedata_to_nwb(
        SpikeData(EXPECTED_MS, metadata=DANDI_READY), tmp_path / "units.nwb"
    )
    return loaders.LOADERS["nwb"](path)


def pickle_fixture(tmp_path):
    export_to_pickle(SpikeData(EXPECTED_MS), tmp_path / "sd.pkl")
    with pytest.warns(UnpicklingWarning):
        return loaders.LOADERS["pickle"](tmp_path / "sd.pkl")


def spikeinterface_fixture(tmp_path):
    import spikeinterface.core as si

    sorting = si.NumpySorting.from_unit_dict(
        [{0: np.array([10, 20]), 1: np.array([30])}], sampling_frequency=10000.0
    )
    return loaders.LOADERS["spikeinterface"](sorting)


def spikeinterface_recording_fixture(tmp_path):
    import spikeinterface.core as si

    traces = np.zeros((50, 2))
    traces[[1, 2], 0] = 50.0
    traces[3, 1] = -50.0
    recording = si.NumpyRecording([traces], sampling_frequency=1000.0)
    return loaders.LOADERS["spikeinterface_recording"](
        recording, hysteresis=False, threshold_sigma=3.0
    )


def npz_fixture(tmp_path):
    units = np.array(
        [{"unit_id": 0, "spike_train": np.array([10, 20])}, {"unit_id": 1, "spike_train": [30]}],
        dtype=object,
    )
    np.savez(tmp_path / "sorted.npz", units=units, fs=10000.0)
    with pytest.warns(UnpicklingWarning):
        return loaders.LOADERS["spikelab_npz"](tmp_path / "sorted.npz")


FIXTURES = {
    "dandi": dandi_fixture,
    "hdf5": hdf5_fixture,
    "hdf5_raw_thresholded": hdf5_raw_fixture,
    "ibl": ibl_fixture,
    "kilosort": kilosort_fixture,
    "nwb": nwb_fixture,
    "pickle": pickle_fixture,
    "spikelab_npz": npz_fixture,
    "spikeinterface": spikeinterface_fixture,
    "spikeinterface_recording": spikeinterface_recording_fixture,
}


def test_every_registered_loader_has_a_fixture():
    assert set(loaders.LOADERS) == set(FIXTURES)


@pytest.mark.parametrize("source", sorted(FIXTURES))
def test_registered_loader_loads(tmp_path, source):
    """Each fixture returns SpikeData (expected: EXPECTED_MS) or (SpikeData, expected)."""
    result = FIXTURES[source](tmp_path)
    sd, expected = result if isinstance(result, tuple) else (result, EXPECTED_MS)
    assert type(sd) is SpikeData
    assert [np.round(t, 9).tolist() for t in sd.train] == expected


def test_registry_names_and_suffixes_are_unique():
    names = [source.name for source in loaders.SOURCES]
    suffixes = [suffix for source in loaders.SOURCES for suffix in source.suffixes]
    assert len(names) == len(set(names))
    assert len(suffixes) == len(set(suffixes))
    assert all(suffix.startswith(".") and suffix == suffix.lower() for suffix in suffixes)


def test_everything_is_derived_from_the_registry(tmp_path):
    """LOADERS, LOADER_VERSIONS, FORMATS, the suffix table and __all__ follow SOURCES."""
    from spikelab.loaders import formats

    for source in loaders.SOURCES:
        assert loaders.LOADERS[source.name] is source.loader
        assert loaders.LOADER_VERSIONS[source.name] == source.version
        assert (source.name in formats.FORMATS) is source.local_format
        for function in (source.loader, *source.helpers):
            assert function.__name__ in loaders.__all__
            assert getattr(loaders, function.__name__) is function
        for suffix in source.suffixes:
            assert formats.detect_format(_empty_file(tmp_path, suffix)) == source.name
    assert len(loaders.LOADERS) == len(loaders.LOADER_VERSIONS) == len(loaders.SOURCES)


def _empty_file(folder, suffix):
    path = folder / f"x{suffix}"
    if suffix in (".h5", ".hdf5"):
        with h5py.File(path, "w"):
            pass
    else:
        path.write_bytes(b"")
    return path


def test_the_derived_names_keep_their_values():
    """The public names are derived now; their values are the ones callers were given."""
    from spikelab.loaders.formats import FORMATS

    assert FORMATS == ("auto", "nwb", "kilosort", "hdf5", "spikelab_npz", "pickle")
    assert loaders.LOADER_VERSIONS == {
        "dandi": "2",
        "hdf5": "2",
        "hdf5_raw_thresholded": "2",
        "ibl": "2",
        "kilosort": "2",
        "nwb": "2",
        "pickle": "1",
        "spikeinterface": "2",
        "spikeinterface_recording": "1",
        "spikelab_npz": "1",
    }
    assert list(loaders.LOADERS) == list(loaders.LOADER_VERSIONS)
    assert loaders.__all__ == ["LOADERS", "LOADER_VERSIONS", *sorted(SEED_API_FUNCTIONS)]


def test_upstream_module_exposes_the_same_functions():
    for name in loaders.__all__:
        assert getattr(upstream, name) is getattr(loaders, name)
    assert upstream.export_to_pickle is export_to_pickle


# The functions the upstream API reference (seed-api.md, kept outside this repository)
# documents under spikelab.data_loaders.data_loaders.
SEED_API_FUNCTIONS = {
    "load_spikedata_from_hdf5",
    "load_spikedata_from_hdf5_raw_thresholded",
    "load_spikedata_from_kilosort",
    "load_spikedata_from_nwb",
    "load_spikedata_from_pickle",
    "load_spikedata_from_spikeinterface",
    "load_spikedata_from_spikeinterface_recording",
    "load_spikedata_from_spikelab_sorted_npz",
    "list_dandi_assets",
    "load_spikedata_from_dandi",
    "load_recording_from_dandi",
    "load_spikedata_from_ibl",
    "query_ibl_probes",
}


def test_seed_api_functions_are_exported():
    """The API reference's functions resolve on both import paths.

    Runs in any clone: the names are listed above. When the reference itself lies beside
    the checkout (``../shared/seed-api.md``), every name it documents that spikelab builds
    is checked too.
    """
    documented = set(SEED_API_FUNCTIONS)
    if SEED_API.is_file():
        documented |= set(re.findall(r"data_loaders\.data_loaders\.(\w+)\(", SEED_API.read_text()))
    built = {name for name in documented if hasattr(loaders, name)}
    assert SEED_API_FUNCTIONS <= built
    for name in built:
        assert getattr(upstream, name) is getattr(loaders, name)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("spikelab", "spikelab/__init__.py"),
        ("spikelab.loaders", "loaders/__init__.py"),
        ("spikelab.io", "spikelab/io/__init__.py"),
        ("spikelab.data_loaders.data_loaders", "spikelab/data_loaders/data_loaders.py"),
    ],
)
def test_packages_import_by_name(module, source):
    """Each package imports on its own, in a fresh interpreter, from this checkout's file."""
    shown = subprocess.run(
        [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert Path(shown.stdout.strip()).resolve() == (REPO / source).resolve()
