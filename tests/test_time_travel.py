"""Time travel after compaction: a vacuumed version is named as such, never a raw I/O error."""

import pytest

from spikelab.cli import run
from spikelab.exceptions import LakeVersionError
from spikelab.io.delta_lake import Publication, publish
from spikelab.io.delta_read import history, open_units
from spikelab.io.delta_upkeep import compact
from spikelab.io.lake import connect
from spikelab.io.units_table import units_arrow_table
from spikelab.lake_queries import summary_rows
from spikelab.spikedata import SpikeData


def entry(asset, trains):
    sd = SpikeData(trains, length=100.0)
    units = units_arrow_table(sd, source="files", dataset_id="d", asset_id=asset)
    return Publication(("files", "d", asset), units, {"status": "ok", "input": {}})


@pytest.fixture
def compacted(tmp_path):
    """Four units versions (0-3), then compaction with no retention: only the last reads."""
    root = str(tmp_path / "lake")
    for number in range(3):
        publish(root, [entry(f"a{number}", [[1.0 + number]])])
    publish(root, [entry("a0", [[9.0], [8.0]])])  # a re-ingest: adds and deletes rows
    assert open_units(root).version() >= 3
    before = [v["version"] for v in history(root)]
    compact(root, retention_hours=0)
    return root, before


def test_a_vacuumed_version_is_refused_by_name(compacted):
    root, _ = compacted
    newest = open_units(root).version()
    oldest = min(v["version"] for v in history(root) if v["readable"])
    assert oldest > 1
    message = f"version 1 is older than the retention window: oldest readable version is {oldest}"
    with pytest.raises(LakeVersionError, match=message):
        open_units(root, as_of=1)
    with pytest.raises(LakeVersionError, match=message):
        connect(root, as_of=1)
    with pytest.raises(LakeVersionError, match=message):
        summary_rows(root, as_of=1)
    assert open_units(root, as_of=newest).version() == newest
    assert connect(root).execute("SELECT count(*) FROM units").fetchone() == (4,)


def test_the_cli_exits_2_and_history_marks_readable_versions(compacted, capsys):
    root, before = compacted
    for question in ("units", "summary"):
        assert run(["lake", question, "--as-of", "1", "--lake", root]) == 2
        error = capsys.readouterr().err
        assert "version 1 is older than the retention window" in error
        assert "IOException" not in error
    assert run(["lake", "history", "--lake", root]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0][-1] == "readable"
    marks = {int(row[0]): row[-1] for row in rows[1:]}
    assert set(before) <= set(marks)
    assert marks[0] == marks[1] == "no" and marks[max(marks)] == "yes"
    assert list(marks.values()) == sorted(marks.values(), reverse=True)  # newest yes, then no


def test_history_of_an_uncompacted_lake_is_all_readable(tmp_path):
    root = str(tmp_path / "lake")
    publish(root, [entry("a", [[1.0]])])
    publish(root, [entry("a", [[2.0]])])
    assert [v["readable"] for v in history(root)] == [True] * len(history(root))
    assert open_units(root, as_of=0).version() == 0


def test_the_newest_version_reads_after_compaction_by_number_too(compacted):
    root, _ = compacted
    newest = open_units(root).version()  # the compaction's own commit: no publication tag
    latest = connect(root).execute("SELECT count(*) FROM units").fetchone()
    assert connect(root, as_of=newest).execute("SELECT count(*) FROM units").fetchone() == latest
    assert summary_rows(root, as_of=newest) == summary_rows(root)
