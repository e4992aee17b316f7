"""The loader registry: everything derived from SOURCES, the upstream import paths work.

Every registry entry loading a real input is tests/test_loader_contract.py's job.
"""

import re
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import spikelab.data_loaders.data_loaders as upstream
from spikelab import loaders
from spikelab.io import export_to_pickle

REPO = Path(__file__).parents[1]
SEED_API = Path(__file__).parents[2] / "shared" / "seed-api.md"


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


def test_the_format_words_are_the_local_formats_of_the_registry(capsys):
    """The word list lives once (spikelab.choices); the registry's local formats follow it."""
    from spikelab.cli.parser import build_parser
    from spikelab.loaders.formats import FORMATS

    local = tuple(source.name for source in loaders.SOURCES if source.local_format)
    assert FORMATS == ("auto", *local)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ingest", "files", "x.nwb", "--format", "nope"])
    offered = re.search(r"choose from (.*)\)", capsys.readouterr().err).group(1)
    assert tuple(word.strip("' ") for word in offered.split(",")) == FORMATS
