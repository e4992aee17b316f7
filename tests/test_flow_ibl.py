"""The IBL-region flow over a real on-disk ONE cache (local mode), on a real Prefect backend."""

from pathlib import Path

import pytest
from ibl_cache import PIDS, build_ibl_cache, units_table

from spikelab.flows import ingest_ibl_region
from spikelab.io.lake import connect
from spikelab.io.manifest import read_manifest
from spikelab.io.units_table import read_units_table

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
    sd = read_units_table(Path(lake, "units", "source=ibl", f"dataset={eid}", f"{pid}.parquet"))
    assert sd.get_neuron_attribute("cluster_id") == [0, 2, 4, 5]
    assert sd.get_neuron_attribute("location_label") == ["MOs", "MOs", "MOp", "CA1"]
    assert [t.tolist() for t in sd.train][0] == [250.0, 1250.0, 3000.0]
    manifest = read_manifest(Path(lake, "manifests", "source=ibl", f"dataset={eid}", f"{pid}.json"))
    assert manifest["status"] == "ok" and manifest["input"]["pid"] == pid
    assert manifest["metadata"]["eid"] == eid

    rows = (
        connect(lake)
        .execute("SELECT count(*) FROM units WHERE source = 'ibl' AND location_label = 'MOp'")
        .fetchone()
    )
    assert rows == (4,)  # MOp5 on s0/probe00, and three MOp units on s1/probe01

    again = ingest_ibl_region(["MOs", "MOp"], min_units=2, **kwargs)
    assert again["counts"] == {"ok": 0, "skipped": 3, "failed": 0}
    limited = ingest_ibl_region(["CA1"], max_probes=1, refresh=True, **kwargs)
    assert limited["counts"]["ok"] == 1
