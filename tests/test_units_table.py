"""The units-table writer on attributes it cannot store: it skips them, says why, and goes on."""

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from spikelab.io.units_table import (
    read_units_table,
    skipped_columns,
    units_arrow_table,
    write_units_table,
)
from spikelab.spikedata import SpikeData

TARGET = {"source": "files", "dataset_id": "d", "asset_id": "a"}


def write(tmp_path, attributes, trains=None):
    trains = trains if trains is not None else [[float(i + 1)] for i in range(len(attributes))]
    sd = SpikeData(trains, length=10.0, neuron_attributes=attributes)
    out = write_units_table(sd, tmp_path / "u.parquet", **TARGET)
    return out, pq.read_table(tmp_path / "u.parquet").to_pylist()


def test_clean_input_reports_nothing_skipped(tmp_path):
    out, rows = write(tmp_path, [{"unit_id": 1, "location": [1.0, 2.0, 3.0], "snr": 2.0}])
    data = (tmp_path / "u.parquet").read_bytes()
    assert out == {
        "path": str(tmp_path / "u.parquet"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "rows": 1,
        "skipped_columns": {},
    }
    assert (rows[0]["location_x"], rows[0]["location_z"], rows[0]["snr"]) == (1.0, 3.0, 2.0)


@pytest.mark.parametrize("text", ["CA1", "", b"adn"])
def test_text_location_gives_null_coordinates_and_is_reported(tmp_path, text):
    attributes = [
        {"unit_id": 0, "location": text, "location_label": "CA1", "snr": 1.5},
        {"unit_id": 1, "location": text, "snr": 2.5},
    ]
    out, rows = write(tmp_path, attributes)
    assert list(out["skipped_columns"]) == ["location"]
    assert "not coordinates" in out["skipped_columns"]["location"]
    assert [(r["location_x"], r["location_y"], r["location_z"]) for r in rows] == [
        (None, None, None)
    ] * 2
    assert [r["location_label"] for r in rows] == ["CA1", None]
    assert [r["snr"] for r in rows] == [1.5, 2.5]
    back = read_units_table(tmp_path / "u.parquet")
    assert back.neuron_attributes == [
        {"unit_id": 0, "location_label": "CA1", "snr": 1.5},
        {"unit_id": 1, "snr": 2.5},
    ]


def test_one_unit_with_a_region_name_voids_every_coordinate(tmp_path):
    out, rows = write(tmp_path, [{"location": [1.0, 2.0, 3.0]}, {"location": "DG"}])
    assert "str 'DG'" in out["skipped_columns"]["location"]
    assert [r["location_x"] for r in rows] == [None, None]


@pytest.mark.parametrize(
    "location, reason",
    [
        ([[1.0, 2.0, 3.0]], "a list, not a coordinate"),
        ([1.0, "a", 3.0], "str 'a', not a coordinate"),
        ([1.0, 2.0, 3.0, 4.0], "4 values"),
        (np.zeros((1, 3)), "shape (1, 3)"),
        ({"x": 1.0}, "a dict, not coordinates"),
        ([True, False], "bool True"),
    ],
)
def test_locations_that_are_not_up_to_three_numbers(tmp_path, location, reason):
    out, rows = write(tmp_path, [{"unit_id": 0, "location": location}])
    assert reason in out["skipped_columns"]["location"]
    assert rows[0]["location_x"] is None


def test_numeric_locations_of_every_shape_round_trip(tmp_path):
    attributes = [
        {"unit_id": 0, "location": np.array([1.0, 2.0, 3.0])},  # an array, not a list
        {"unit_id": 1, "location": [np.float32(4.5), np.int64(5)]},
        {"unit_id": 2, "location": 42.0},  # a scalar is one coordinate
        {"unit_id": 3, "location": [1.0, None, 3.0]},
        {"unit_id": 4},
    ]
    out, rows = write(tmp_path, attributes)
    assert out["skipped_columns"] == {}
    assert [(r["location_x"], r["location_y"], r["location_z"]) for r in rows] == [
        (1.0, 2.0, 3.0),
        (4.5, 5.0, None),
        (42.0, None, None),
        (1.0, None, 3.0),
        (None, None, None),
    ]
    back = read_units_table(tmp_path / "u.parquet").get_neuron_attribute("location")
    assert back == [[1.0, 2.0, 3.0], [4.5, 5.0], [42.0], [1.0, None, 3.0], None]


@pytest.mark.parametrize(
    "value, reason",
    [("A3", "str 'A3', not a channel number"), (2.5, "float 2.5"), (2**40, "int 1099511627776")],
)
def test_electrode_that_is_not_a_channel_number(tmp_path, value, reason):
    out, rows = write(tmp_path, [{"electrode": 1}, {"electrode": value}])
    assert reason in out["skipped_columns"]["electrode"]
    assert [r["electrode"] for r in rows] == [None, None]


def test_electrodes_of_any_integer_type(tmp_path):
    values = [np.uint32(7), np.uint64(8), 9.0, np.nan, None]
    out, rows = write(tmp_path, [{"electrode": v} for v in values])
    assert out["skipped_columns"] == {}
    assert [r["electrode"] for r in rows] == [7, 8, 9, None, None]


@pytest.mark.parametrize(
    "values, reason",
    [
        (["good", 2], "mix types across units (int, str)"),
        ([True, 1], "mix types across units (bool, int)"),
        ([b"ab", b"cd"], "holds bytes b'ab'"),
        ([object(), None], "holds a object"),
        ([[[1, 2]], [[3]]], "holds a list; only scalar attributes"),
        ([{"a": 1}, None], "holds a dict; only scalar attributes"),
        ([np.zeros(3), np.ones(3)], "holds a ndarray; only scalar attributes"),
        ([2**70, 1], "cannot be stored in Parquet"),
    ],
)
def test_attributes_that_cannot_be_a_column_are_skipped(tmp_path, values, reason):
    attributes = [{"unit_id": i, "odd": v, "snr": float(i)} for i, v in enumerate(values)]
    out, rows = write(tmp_path, attributes)
    assert list(out["skipped_columns"]) == ["odd"]
    assert reason in out["skipped_columns"]["odd"]
    assert "odd" not in rows[0] and [r["snr"] for r in rows] == [0.0, 1.0]
    assert [a.get("odd") for a in read_units_table(tmp_path / "u.parquet").neuron_attributes] == [
        None,
        None,
    ]


def test_ints_and_floats_share_a_float_column(tmp_path):
    out, rows = write(tmp_path, [{"amp": 1}, {"amp": 2.5}, {"amp": None}])
    assert out["skipped_columns"] == {}
    assert [r["amp"] for r in rows] == [1.0, 2.5, None]


def test_text_labels_that_are_not_text(tmp_path):
    attributes = [
        {"location_label": b"CA1", "group_name": {"shank": 0}},
        {"location_label": np.str_("DG"), "group_name": None},
    ]
    out, rows = write(tmp_path, attributes)
    assert list(out["skipped_columns"]) == ["group_name"]
    assert [r["location_label"] for r in rows] == ["CA1", "DG"]  # bytes decoded
    assert [r["group_name"] for r in rows] == [None, None]


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_unsigned_unit_ids_round_trip_as_integers(tmp_path, dtype):
    ids = np.array([3, 2**31 + 1], dtype=dtype)
    if dtype is np.uint64:
        ids[1] = 2**63 + 5  # beyond int64
    attributes = [{"unit_id": i, "cluster_id": i} for i in ids]
    out, rows = write(tmp_path, attributes)
    assert [r["unit_id"] for r in rows] == [str(int(i)) for i in ids]
    back = read_units_table(tmp_path / "u.parquet")
    assert back.get_neuron_attribute("unit_id") == [int(i) for i in ids]
    if dtype is np.uint32:
        assert out["skipped_columns"] == {}
        assert [r["cluster_id"] for r in rows] == [3, 2**31 + 1]
    else:  # a uint64 beyond int64 has no Parquet integer column; the id text keeps it
        assert "cannot be stored" in out["skipped_columns"]["cluster_id"]


def test_the_arrow_table_carries_the_skipped_columns():
    sd = SpikeData([[1.0]], neuron_attributes=[{"location": "CA1", "template": np.zeros(4)}])
    table = units_arrow_table(sd, **TARGET)
    assert sorted(skipped_columns(table)) == ["location", "template"]


def test_attribute_keys_that_are_not_text(tmp_path):
    out, rows = write(tmp_path, [{("a", 1): 2.0, 7: "x"}])
    assert out["skipped_columns"] == {}
    assert (rows[0]["('a', 1)"], rows[0]["7"]) == (2.0, "x")
    back = read_units_table(tmp_path / "u.parquet").neuron_attributes[0]
    assert back == {"unit_id": 0, "('a', 1)": 2.0, "7": "x"}


@pytest.mark.parametrize(
    ("metadata", "rate"),
    [
        ({"fs_Hz": 30000}, 30000.0),
        ({"sampling_rate_hz": np.array([20000.0])}, 20000.0),
        ({"fs_Hz": "fast"}, None),
        ({"fs_Hz": [1.0, 2.0]}, None),
    ],
)
def test_footer_rate_is_a_number_or_none(metadata, rate):
    table = units_arrow_table(SpikeData([[1.0]], metadata=metadata), **TARGET)
    footer = json.loads(table.schema.metadata[b"spikelab"])
    assert footer["sampling_rate_hz"] == rate
