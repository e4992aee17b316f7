import ast
import inspect
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

import spikelab.data_loaders.data_loaders as upstream
from spikelab.exceptions import (
    DatasetNotFoundError,
    FileFormatError,
    UnpicklingWarning,
    UntrustedPickleError,
)
from spikelab.loaders import LOADERS, load_spikedata_from_spikelab_sorted_npz
from spikelab.spikedata import SpikeData

# Every valid file holds an object array, so every load warns; the warning itself is
# checked by the tests under "trust" (pytest.warns sees warnings this mark ignores).
pytestmark = pytest.mark.filterwarnings("ignore::spikelab.exceptions.UnpicklingWarning")

FS = 20000.0
TEMPLATE = np.array([[0.0, -1.5, 0.25], [0.5, -3.0, 1.0]])
LOCATIONS = np.array([[0.0, 0.0], [0.0, 17.5], [32.0, 35.0]])


def documented_defaults(function):
    """Map each ``name : type, default: X`` line of a numpydoc Parameters section to X."""
    pattern = re.compile(r"^(\w+) : [^\n]*?, default: (.+)$", re.MULTILINE)
    return {
        name: ast.literal_eval(text) for name, text in pattern.findall(inspect.getdoc(function))
    }


def units_array(*units):
    """Object array of unit dicts, as SpikeLab's compile step saves them."""
    array = np.empty(len(units), dtype=object)
    for index, unit in enumerate(units):
        array[index] = unit
    return array


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture
def full_units():
    return units_array(
        {
            "unit_id": np.int64(7),
            "spike_train": np.array([4000, 20, 200], dtype=np.int64),  # unsorted on purpose
            "x_max": np.float64(32.0),
            "y_max": np.float64(35.0),
            "electrode": np.int64(2),
            "template": TEMPLATE,
            "amplitudes": np.array([11.5, 12.0, 9.25]),
            "std_norms": np.array([0.5, 0.75]),
            "peak_sign": "negative",
            "max_channel_id": np.int32(5),
        },
        {"unit_id": 12, "spike_train": np.array([30000], dtype=np.int64)},
        {"spike_train": np.array([], dtype=np.int64)},
    )


@pytest.fixture
def full_file(tmp_path, full_units):
    return write_npz(
        tmp_path / "sorted.npz", units=full_units, fs=np.float64(FS), locations=LOCATIONS
    )


def test_loads_spike_times_in_ms(full_file):
    sd = load_spikedata_from_spikelab_sorted_npz(full_file)
    assert type(sd) is SpikeData
    assert sd.N == 3
    assert sd.train[0].tolist() == [1.0, 10.0, 200.0]
    assert sd.train[1].tolist() == [1500.0]
    assert sd.train[2].tolist() == []
    assert sd.train[0].dtype == np.float64
    assert sd.length == 1500.0
    assert sd.start_time == 0.0


def test_unit_attributes(full_file):
    sd = load_spikedata_from_spikelab_sorted_npz(full_file)
    first, second, third = sd.neuron_attributes
    assert set(first) == {
        "unit_id",
        "location",
        "electrode",
        "template",
        "amplitudes",
        "std_norms",
        "peak_sign",
        "max_channel_id",
    }
    assert first["unit_id"] == 7 and type(first["unit_id"]) is int
    assert first["location"] == [32.0, 35.0]
    assert all(type(value) is float for value in first["location"])
    assert first["electrode"] == 2 and type(first["electrode"]) is int
    assert first["max_channel_id"] == 5 and type(first["max_channel_id"]) is int
    np.testing.assert_array_equal(first["template"], TEMPLATE)
    np.testing.assert_array_equal(first["amplitudes"], [11.5, 12.0, 9.25])
    np.testing.assert_array_equal(first["std_norms"], [0.5, 0.75])
    assert first["peak_sign"] == "negative"
    # Only what the file holds; a missing unit_id falls back to the unit's position.
    assert second == {"unit_id": 12}
    assert third == {"unit_id": 2}
    assert sd.get_neuron_attribute("unit_id") == [7, 12, 2]


def test_location_needs_both_coordinates(tmp_path):
    units = units_array({"unit_id": 1, "spike_train": [10], "x_max": 4.0})
    sd = load_spikedata_from_spikelab_sorted_npz(
        write_npz(tmp_path / "x_only.npz", units=units, fs=FS)
    )
    assert sd.neuron_attributes == [{"unit_id": 1}]


def test_metadata(full_file):
    sd = load_spikedata_from_spikelab_sorted_npz(full_file)
    assert set(sd.metadata) == {
        "source_file",
        "format",
        "source_format",
        "fs_Hz",
        "channel_locations",
    }
    assert sd.metadata["source_format"] == "SpikeLab_npz"
    assert sd.metadata["format"] == "spikelab_npz"
    assert sd.metadata["source_file"] == str(full_file)
    assert sd.metadata["fs_Hz"] == 20000.0 and type(sd.metadata["fs_Hz"]) is float
    assert isinstance(sd.metadata["channel_locations"], np.ndarray)
    np.testing.assert_array_equal(sd.metadata["channel_locations"], LOCATIONS)


def test_metadata_without_locations(tmp_path, full_units):
    path = write_npz(tmp_path / "no_locations.npz", units=full_units, fs=np.int64(30000))
    sd = load_spikedata_from_spikelab_sorted_npz(path)
    assert "channel_locations" not in sd.metadata
    assert sd.metadata["fs_Hz"] == 30000.0 and type(sd.metadata["fs_Hz"]) is float
    assert sd.train[1].tolist() == [1000.0]


def test_explicit_length_wins(full_file):
    sd = load_spikedata_from_spikelab_sorted_npz(full_file, length_ms=2500.0)
    assert sd.length == 2500.0
    assert sd.train[1].tolist() == [1500.0]


def test_no_units_gives_empty_spikedata(tmp_path):
    path = write_npz(tmp_path / "empty.npz", units=units_array(), fs=FS)
    sd = load_spikedata_from_spikelab_sorted_npz(path)
    assert sd.N == 0
    assert sd.length == 0.0
    assert sd.neuron_attributes == []
    assert sd.metadata["fs_Hz"] == FS


def test_accepts_str_and_pathlike(full_file):
    assert load_spikedata_from_spikelab_sorted_npz(
        str(full_file)
    ) == load_spikedata_from_spikelab_sorted_npz(Path(full_file))


def test_round_trip_known_trains(tmp_path):
    fs = 30000.0
    rng = np.random.default_rng(3)
    samples = [np.sort(rng.integers(0, 600000, size=n)) for n in (250, 1, 0, 40)]
    units = units_array(
        *({"unit_id": 100 + i, "spike_train": train} for i, train in enumerate(samples))
    )
    path = write_npz(tmp_path / "round.npz", units=units, fs=fs)
    sd = load_spikedata_from_spikelab_sorted_npz(path, length_ms=20000.0)
    assert sd.N == 4
    assert sd.length == 20000.0
    assert sd.get_neuron_attribute("unit_id") == [100, 101, 102, 103]
    for loaded, train in zip(sd.train, samples, strict=True):
        assert loaded.shape == train.shape
        np.testing.assert_allclose(loaded, train / fs * 1000.0, rtol=1e-12, atol=0)


def test_documented_defaults_match_the_signature():
    documented = documented_defaults(load_spikedata_from_spikelab_sorted_npz)
    assert documented == {"length_ms": None, "allow_pickle": True}
    parameters = inspect.signature(load_spikedata_from_spikelab_sorted_npz).parameters
    assert {name: parameters[name].default for name in documented} == documented


def test_registered_under_both_import_paths():
    assert LOADERS["spikelab_npz"] is load_spikedata_from_spikelab_sorted_npz
    assert (
        upstream.load_spikedata_from_spikelab_sorted_npz is load_spikedata_from_spikelab_sorted_npz
    )


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(
        FileNotFoundError, match=f"SpikeLab .npz file not found: {re.escape(str(path))}"
    ):
        load_spikedata_from_spikelab_sorted_npz(path)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"fs": FS}, r"lacks units; keys found: \['fs'\]"),
        (
            {"units": units_array({"spike_train": [1]}), "locations": LOCATIONS},
            r"lacks fs; keys found: \['locations', 'units'\]",
        ),
        ({"spike_times": np.arange(3)}, r"lacks units, fs; keys found: \['spike_times'\]"),
        ({}, r"lacks units, fs; keys found: \[\]"),
    ],
)
def test_missing_keys(tmp_path, arrays, match):
    path = write_npz(tmp_path / "partial.npz", **arrays)
    with pytest.raises(KeyError, match=re.escape(str(path)) + " " + match) as info:
        load_spikedata_from_spikelab_sorted_npz(path)
    assert isinstance(info.value, DatasetNotFoundError)


@pytest.mark.parametrize(
    ("fs", "match"),
    [
        (0.0, "fs_Hz must be positive and finite, got 0.0"),
        (-30000.0, "fs_Hz must be positive and finite, got -30000.0"),
        (np.nan, "fs_Hz must be positive and finite, got nan"),
        ("fast", "fs_Hz must be a number of Hz, got 'fast'"),
        (np.array([20000.0, 30000.0]), r"fs must hold one sampling rate in Hz, got shape \(2,\)"),
        (np.array([]), r"fs must hold one sampling rate in Hz, got shape \(0,\)"),
    ],
)
def test_bad_sampling_rate(tmp_path, full_units, fs, match):
    path = write_npz(tmp_path / "bad_fs.npz", units=full_units, fs=fs)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + match) as info:
        load_spikedata_from_spikelab_sorted_npz(path)
    assert isinstance(info.value, FileFormatError)


@pytest.mark.parametrize(
    ("units", "match"),
    [
        (np.array([10, 20]), r"units\[0\] is not a dict with a spike_train"),
        (units_array({"unit_id": 1, "spike_train": [5]}, {"unit_id": 2}), r"units\[1\] is not"),
        (units_array(["spike_train"]), r"units\[0\] is not a dict with a spike_train"),
        (
            np.array({"unit_id": 1, "spike_train": [5]}, dtype=object),
            r"units must be a 1-D array of one dict per unit, got shape \(\)",
        ),
        (
            units_array({"unit_id": 1, "spike_train": ["a", "b"]}),
            r"units\[0\]\['spike_train'\] is not an array of sample numbers",
        ),
    ],
)
def test_malformed_units(tmp_path, units, match):
    path = write_npz(tmp_path / "bad_units.npz", units=units, fs=FS)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + match) as info:
        load_spikedata_from_spikelab_sorted_npz(path)
    assert isinstance(info.value, FileFormatError)


def test_negative_sample_is_rejected(tmp_path):
    path = write_npz(
        tmp_path / "negative.npz", units=units_array({"spike_train": [-20, 40]}), fs=FS
    )
    with pytest.raises(ValueError, match=re.escape(f"{path}: a spike at -1.0 ms lies before")):
        load_spikedata_from_spikelab_sorted_npz(path)


def test_length_shorter_than_last_spike_is_rejected(full_file):
    with pytest.raises(
        ValueError, match=re.escape(f"{full_file}: a spike at 1500.0 ms lies after")
    ):
        load_spikedata_from_spikelab_sorted_npz(full_file, length_ms=1000.0)


def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _write_npy(path):
    with path.open("wb") as handle:  # np.save(path) would append ".npy" to the name
        np.save(handle, np.arange(4))
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: _write_bytes(p, b"unit,spike\n1,20\n"), "is not an .npz archive"),
        (lambda p: _write_bytes(p, b""), "is not an .npz archive"),
        (_write_npy, "is not an .npz archive"),
        (lambda p: _write_bytes(p, b"PK\x03\x04 truncated"), "is not a readable .npz file"),
        (lambda p: _write_bytes(p, b"PK\x05\x06"), "is not a readable .npz file"),
    ],
    ids=["csv", "empty", "npy", "broken-zip", "zip-header-only"],
)
def test_not_an_npz(tmp_path, make, match):
    path = make(tmp_path / "sorted.npz")
    with pytest.raises(ValueError, match=re.escape(str(path)) + " " + match) as info:
        load_spikedata_from_spikelab_sorted_npz(path)
    assert isinstance(info.value, FileFormatError)


def test_a_plain_pickle_is_not_unpickled(tmp_path):
    # np.load(allow_pickle=True) would unpickle a non-zip file and run this payload.
    marker = tmp_path / "payload-ran"
    path = tmp_path / "sorted.npz"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="is not an .npz archive"):
        load_spikedata_from_spikelab_sorted_npz(path)
    assert not marker.exists()


# ---------------------------------------------------------------- trust


def test_unpickling_warns_naming_the_file_and_only_the_object_keys(full_file):
    with pytest.warns(UnpicklingWarning) as record:
        sd = load_spikedata_from_spikelab_sorted_npz(full_file)
    assert len(record) == 1 and issubclass(UnpicklingWarning, UserWarning)
    message = str(record[0].message)
    assert message.startswith(f"unpickling 'units' of {full_file}: a pickle can run any code")
    assert "'fs'" not in message and "'locations'" not in message  # plain arrays: no pickle
    assert record[0].filename == __file__
    assert sd.N == 3 and sd.metadata["fs_Hz"] == FS


def test_untrusted_file_is_refused_before_anything_is_unpickled(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    units = units_array({"spike_train": np.array([20]), "note": Payload()})
    path = write_npz(tmp_path / "sorted.npz", units=units, fs=np.float64(FS))
    with pytest.raises(
        UntrustedPickleError,
        match=re.escape(f"{path}: 'units' holds Python objects that only pickle can read")
        + r".*allow_pickle=False.*If you trust this file, load it with allow_pickle=True",
    ) as info:
        load_spikedata_from_spikelab_sorted_npz(path, allow_pickle=False)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()
    with pytest.warns(UnpicklingWarning):
        load_spikedata_from_spikelab_sorted_npz(path)  # trusted: the payload runs
    assert marker.exists()


def test_untrusted_file_missing_keys_is_a_key_error_not_a_pickle_question(tmp_path):
    path = write_npz(tmp_path / "partial.npz", units=units_array({"spike_train": [1]}))
    with pytest.raises(KeyError, match=r"lacks fs; keys found: \['units'\]"):
        load_spikedata_from_spikelab_sorted_npz(path, allow_pickle=False)


def test_object_fs_also_needs_trust(tmp_path, full_units):
    fs = np.array(FS, dtype=object)
    path = write_npz(tmp_path / "objfs.npz", units=full_units, fs=fs)
    with pytest.raises(UntrustedPickleError, match=r"'units', 'fs' holds Python objects"):
        load_spikedata_from_spikelab_sorted_npz(path, allow_pickle=False)
    with pytest.warns(UnpicklingWarning, match=r"unpickling 'units', 'fs' of"):
        assert load_spikedata_from_spikelab_sorted_npz(path).metadata["fs_Hz"] == FS
