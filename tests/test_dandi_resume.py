"""A first DANDI ingest killed half way resumes: only what did not land is fetched again."""

import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from test_dandi import sorted_units

from spikelab.flows import ingest_dandiset
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.delta_lake import assets_index
from spikelab.io.lake import connect
from spikelab.loaders.dandi import DandiClient
from spikelab.testing import DandiStandIn

pytestmark = pytest.mark.usefixtures("prefect_harness")
ASSETS = 24


def landed(lake):
    """Asset ids the lake's assets table holds (nothing while it does not exist yet)."""
    try:
        return {key[2] for key in assets_index(str(lake))}
    except Exception:  # noqa: BLE001 - no table yet
        return set()


def test_a_killed_first_ingest_fetches_only_what_did_not_land(tmp_path):
    from prefect.settings import PREFECT_API_URL

    nwb = export_spikedata_to_nwb(sorted_units(5.0), tmp_path / "unit.nwb")
    lake = tmp_path / "lake"
    with DandiStandIn(tmp_path / "archive") as archive:
        ids = [
            archive.add_asset("000321", f"sub-{i:02d}/sub-{i:02d}.nwb", nwb) for i in range(ASSETS)
        ]
        with DandiClient(archive.api_base) as client:
            blobs = {a: urlsplit(client.describe(a).blob_url).path for a in ids}
        # a wide-area link, one asset at a time: the run is still going when killed
        archive.latency_seconds = 0.25
        environment = {
            **os.environ,
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "SPIKELAB_CONCURRENCY": "1",
        }
        command = [sys.executable, "-m", "spikelab.cli", "ingest", "dandi", "000321"]
        process = subprocess.Popen(
            [*command, "--api-base", archive.api_base, "--lake", str(lake)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not landed(lake) and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.05)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # kill -9, mid-run
            process.wait()
        before = landed(lake)
        assert 0 < len(before) < ASSETS, "the run should be killed half way"
        described = archive.count("api", match="/assets/")
        read = {asset_id: archive.count("blob", "GET", blobs[asset_id]) for asset_id in ids}
        listings = archive.count("api", match="/versions/draft/assets/")

        summary = ingest_dandiset("000321", lake=str(lake), api_base=archive.api_base)

        assert summary["counts"]["failed"] == 0
        assert summary["counts"]["ok"] == ASSETS - len(before)
        assert archive.count("api", match="/versions/draft/assets/") == listings + 1  # one page
        # the listing's page carries every record: no asset is described on its own
        assert archive.count("api", match="/assets/") == described + 1
        for asset_id in ids:  # a landed asset's bytes are not read again; the others' are
            again = archive.count("blob", "GET", blobs[asset_id]) - read[asset_id]
            assert (again > 0) == (asset_id not in before), asset_id
    rows = (
        connect(str(lake))
        .execute("SELECT count(*), count(DISTINCT asset_id) FROM units")
        .fetchone()
    )
    assert rows == (ASSETS * 2, ASSETS)  # every asset once, none doubled
