"""The unit filter and the lake handle: parsed once where they enter, then handed down."""

import dataclasses
import math
import os
import re
from contextlib import nullcontext as does_not_raise

import pytest

from spikelab.io.delta_lake import LakeWriter, Publication, publish
from spikelab.io.delta_read import connect
from spikelab.io.lake import Lake, resolve_lake
from spikelab.io.lake_export import export_selection, lake_spikedata
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import find_units, matching_units
from spikelab.spikedata import SpikeData
from spikelab.unit_filter import UnitFilter, UnitFilterKeywords


@pytest.mark.parametrize(
    ("keywords", "expectation"),
    [
        ({"min_rate_hz": -1.0}, pytest.raises(ValueError, match="min_rate_hz must be a finite")),
        ({"min_rate_hz": math.nan}, pytest.raises(ValueError, match="got nan")),
        ({"min_rate_hz": math.inf}, pytest.raises(ValueError, match="got inf")),
        (
            {"regions": ["CA1", 3]},
            pytest.raises(TypeError, match=r"regions must be texts, got \[3\]"),
        ),
        ({"columns": [None]}, pytest.raises(TypeError, match="columns must be texts")),
        ({"regoins": ["CA1"]}, pytest.raises(TypeError, match="regoins")),
        ({"min_rate_hz": 0, "regions": "CA1"}, does_not_raise()),
    ],
)
def test_a_filter_is_checked_when_it_is_built(keywords, expectation):
    with expectation:
        UnitFilter.of(**keywords)


def test_a_filter_normalises_what_it_is_given():
    selection = UnitFilter(regions="HPF", region_labels=["CA1"], species="mouse", min_rate_hz=2)
    assert selection.regions == ("HPF",) and selection.region_labels == ("CA1",)
    assert selection.species == "Mus musculus" and selection.min_rate_hz == 2.0
    assert UnitFilter(species="unknown").species == "unknown"  # a placeholder is kept as given
    assert hash(selection) == hash(UnitFilter(regions=["HPF"], region_labels="CA1",
                                              species="Mus musculus", min_rate_hz=2.0))  # fmt: skip
    assert selection.with_columns("sex", "sex").columns == ("sex",)
    assert selection.with_columns().columns == ()
    assert UnitFilter.of(selection) is selection
    with pytest.raises(TypeError, match="not both.*good"):
        UnitFilter.of(selection, good=True)
    with pytest.raises(TypeError, match=r"must be a UnitFilter, got list \['CA1'\]"):
        UnitFilter.of(["CA1"])  # find_units(lake, ["CA1"]): regions given without their name


def test_the_keywords_and_the_docstring_agree_with_the_fields():
    fields = {field.name: field.default for field in dataclasses.fields(UnitFilter)}
    assert list(UnitFilterKeywords.__annotations__) == list(fields)
    documented = {}
    for names, default in re.findall(r"^    (\w[\w, ]*) : .*, default: (.+)$",
                                     UnitFilter.__doc__, re.MULTILINE):  # fmt: skip
        for name in names.split(", "):
            documented[name] = default
    assert documented == {name: repr(value) for name, value in fields.items()}


def units(key, labels, rates_hz):
    trains = [[float(t) for t in range(1, 1 + round(rate))] for rate in rates_hz]
    attributes = [{"unit_id": i, "location_label": label} for i, label in enumerate(labels)]
    sd = SpikeData(trains, length=1000.0, neuron_attributes=attributes)
    return Publication(key, units_arrow_table(sd, source=key[0], dataset_id=key[1],
                                              asset_id=key[2]), {"status": "ok"})  # fmt: skip


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    lake = Lake(tmp_path_factory.mktemp("filter") / "lake")
    publish(lake, [units(("files", "d", "a"), ["CA1", "DG", "CA1"], [5, 1, 2]),
                   units(("dandi", "000001", "b"), ["CA1"], [3])])  # fmt: skip
    return lake


def test_one_filter_answers_every_query_as_its_keywords_do(lake, tmp_path):
    selection = UnitFilter(region_labels=["CA1"], min_rate_hz=2.5, source="files")
    by_keywords = find_units(str(lake), region_labels=["CA1"], min_rate_hz=2.5, source="files")
    frame = find_units(lake, selection)
    assert frame.equals(by_keywords)
    assert frame["unit_id"].tolist() == ["0"] and frame["firing_rate_hz"].tolist() == [5.0]
    columns, rows = matching_units(lake, selection.with_columns("spike_times_ms"))
    assert columns[-1] == "spike_times_ms" and rows[0][-1] == [1.0, 2.0, 3.0, 4.0, 5.0]
    (sd,) = lake_spikedata(lake, UnitFilter(region_labels="CA1", dataset="d"))
    assert [u["unit_id"] for u in sd.neuron_attributes] == [0, 2]
    assert sd.length == 1000.0 and sd.metadata["asset_id"] == "a"  # the footer, read once
    written = export_selection(lake, tmp_path / "u.parquet", "parquet", selection)
    assert (written.assets, written.units) == (1, 1)
    with pytest.raises(TypeError, match="not both"):
        find_units(lake, selection, good=True)


def test_the_lake_is_resolved_once_and_passed_as_it_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lake = Lake("~/lake/")
    assert lake.root == str(tmp_path / "home" / "lake") == resolve_lake(lake) == os.fspath(lake)
    assert Lake.of(lake) is lake and Lake(lake) == lake and str(lake) == lake.root
    assert Lake("relative").root == str(tmp_path / "relative")
    remote = Lake("s3://bucket/lake/")
    assert remote.root == "s3://bucket/lake"
    assert remote.units_uri == "s3://bucket/lake/tables/units"
    assert remote.table_uri("tables/sessions") == "s3://bucket/lake/tables/sessions"
    assert LakeWriter(lake).lake is lake


def test_one_delete_serves_every_caller(lake, tmp_path):
    other = Lake(tmp_path / "lake")
    publish(other, [units(("files", "d", "a"), ["CA1", "DG"], [1, 2])])
    writer = LakeWriter(other)
    tag = {"commit": "test", "assets": 0}
    assert writer.delete(other.units_uri, "unit_index = 1", tag) == 1
    assert writer.delete(other.units_uri, lambda names: "publication IS NULL", tag) == 0
    assert writer.delete(other.table_uri("tables/missing"), "true", tag) == 0
    rows = connect(other).execute("SELECT unit_id FROM units").fetchall()
    assert rows == [("0",)]
