"""The IBL-region flow over a real on-disk ONE cache (local mode), on a real Prefect backend."""

from pathlib import Path

import pytest
from ibl_cache import PIDS, build_ibl_cache, units_table

from spikelab.flows import ingest_ibl_region
from spikelab.io.delta_read import open_units
from spikelab.io.lake import connect
from spikelab.io.manifest import read_manifest

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def ibl(tmp_path_factory):
    cache = build_ibl_cache(tmp_path_factory.mktemp("one-cache"))
    table_path = tmp_path_factory.mktemp("bwm") / "units.pqt"
    units_table(cache.eids).to_parquet(table_path)
    return cache, str(table_path)


def test_region_flow_loads_matching_probes_and_skips_them_next_time(ibl, tmp_path):
    cache, table_path = ibl
    lake = str(tmp_path / "lake")
    kwargs = {"lake": lake, "one_cache_dir": str(cache.root), "units_table_path": table_path}
    summary = ingest_ibl_region(["MOs", "MOp"], min_units=2, **kwargs)
    # probes with >= 2 good units and at least one in MOs/MOp: s0/probe00, s1/probe00, s1/probe01
    loaded = {a["asset_id"] for a in summary["assets"]}
    assert loaded == {PIDS[("s0", "probe00")], PIDS[("s1", "probe00")], PIDS[("s1", "probe01")]}
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}

    pid = PIDS[("s0", "probe00")]
    eid = cache.eids["s0"]
    rows = (
        connect(lake)
        .execute(
            "SELECT cluster_id, location_label, spike_times_ms FROM units "
            "WHERE dataset_id = ? AND asset_id = ? ORDER BY unit_index",
            [eid, pid],
        )
        .fetchall()
    )
    assert [int(cluster) for cluster, _, _ in rows] == [0, 2, 4, 5]
    assert [label for _, label, _ in rows] == ["MOs", "MOs", "MOp", "CA1"]
    assert list(rows[0][2]) == [250.0, 1250.0, 3000.0]
    manifest = read_manifest(Path(lake, "manifests", "source=ibl", f"dataset={eid}", f"{pid}.json"))
    assert manifest["status"] == "ok" and manifest["input"]["pid"] == pid
    assert manifest["metadata"]["eid"] == eid

    rows = (
        connect(lake)
        .execute("SELECT count(*) FROM units WHERE source = 'ibl' AND location_label = 'MOp'")
        .fetchone()
    )
    assert rows == (4,)  # MOp5 on s0/probe00, and three MOp units on s1/probe01

    version = open_units(lake).version()
    again = ingest_ibl_region(["MOs", "MOp"], min_units=2, **kwargs)
    assert again["counts"] == {"ok": 0, "skipped": 3, "failed": 0}
    assert open_units(lake).version() == version  # skipped in the flow: no commit
    assert manifest["table_version"] == version  # the three probes landed in one commit
    limited = ingest_ibl_region(["CA1"], max_probes=1, refresh=True, **kwargs)
    assert limited["counts"]["ok"] == 1
    total = connect(lake).execute("SELECT count(*) FROM units").fetchone()
    assert total == (sum(a["units"] for a in summary["assets"]),)  # replaced, not doubled
