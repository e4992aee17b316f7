"""A lake written before regions, sessions and quality existed gains them by `lake remap` alone."""

import json

import pyarrow as pa
import pytest
from deltalake import write_deltalake

pytest.importorskip("iblatlas")

from spikelab.cli import run  # noqa: E402
from spikelab.io.delta_lake import assets_uri, open_table, units_uri  # noqa: E402
from spikelab.io.lake import connect  # noqa: E402
from spikelab.lake_queries import find_units, summary_rows  # noqa: E402


def old_lake(root):
    """Units and assets tables as spikelab wrote them before publication ids and regions:
    a raw text `quality` column, no region columns, no sessions or regions table."""
    units = pa.table(
        {
            "source": ["files"] * 3,
            "dataset_id": ["d"] * 3,
            "asset_id": ["a"] * 3,
            "unit_index": pa.array([0, 1, 2], pa.int32()),
            "unit_id": ["0", "1", "2"],
            "n_spikes": pa.array([1, 1, 1], pa.int64()),
            "firing_rate_hz": [1.0, 1.0, 1.0],
            "spike_times_ms": [[1.0], [2.0], [3.0]],
            "location_label": ["Field CA1", "VISp5", "somewhere"],
            "quality": ["Good", "multi-unit", "??"],
        }
    )
    manifest = {
        "status": "ok",
        "metadata": {"species": "Mus musculus", "subject_id": "m1", "age": "P60D", "sex": "F"},
        "spikedata": {"N": 3, "length_ms": 1000.0},
    }
    assets = pa.table(
        {
            "source": ["files"],
            "dataset_id": ["d"],
            "asset_id": ["a"],
            "content_id": ["c"],
            "status": ["ok"],
            "rows": pa.array([3], pa.int64()),
            "manifest": [json.dumps(manifest)],
            "version": pa.array([0], pa.int64()),
        }
    )
    write_deltalake(units_uri(root), units)
    write_deltalake(assets_uri(root), assets)


def test_remap_brings_an_old_lake_up_to_date_without_ingesting(tmp_path, capsys):
    root = str(tmp_path / "lake")
    old_lake(root)
    before = summary_rows(root)
    assert run(["lake", "remap", "--lake", root]) == 0
    assert "remapped 3 units (3 changed)" in capsys.readouterr().out
    frame = find_units(root, columns=["region_match", "attr_quality"])
    assert list(frame["region"].fillna("-")) == ["CA1", "VISp5", "-"]
    assert list(frame["region_match"]) == ["name", "acronym", "none"]
    assert list(frame["quality"].fillna("-")) == ["good", "mua", "-"]
    assert list(frame["attr_quality"]) == ["Good", "multi-unit", "??"]  # the raw value stays
    assert summary_rows(root) == before  # same assets, units and spikes
    assert list(find_units(root, regions=["HPF"])["unit_id"]) == ["0"]
    sessions = connect(root).execute("SELECT subject_id, species, age_days FROM sessions")
    assert sessions.fetchall() == [("m1", "Mus musculus", 60.0)]
    assert connect(root).execute("SELECT count(*) FROM regions").fetchone()[0] > 1000
    version = open_table(units_uri(root)).version()
    assert run(["lake", "remap", "--lake", root]) == 0  # again: nothing changes
    assert "(0 changed)" in capsys.readouterr().out
    assert open_table(units_uri(root)).version() == version + 1
    assert list(find_units(root)["quality"].fillna("-")) == ["good", "mua", "-"]
