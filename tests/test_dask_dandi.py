"""The nightly on Dask worker processes, writing one S3 lake (moto): every asset once."""

import time
import warnings
from collections import Counter

import pytest

from spikelab.config import DandisetEntry
from spikelab.demo_data import write_demo_dataset
from spikelab.flows import ingest_dandisets, ingest_files, run_summary
from spikelab.flows.runners import with_task_runner
from spikelab.io import export_spikedata_to_nwb
from spikelab.io.delta_read import open_assets, open_units
from spikelab.io.lake import connect
from spikelab.spikedata import SpikeData
from spikelab.testing import DandiStandIn

pytestmark = pytest.mark.usefixtures("prefect_harness")

DANDISET = "000321"
ASSETS = 16
BUCKET = "dask-lake"


@pytest.fixture(scope="module")
def worker_env(moto_endpoint, uploader):
    """The lake's credentials and endpoint, here and in every worker process (moto's)."""
    uploader.create_bucket(Bucket=BUCKET)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A dandiset of tiny NWB files; ``published`` maps each asset id to its unit count."""
    root = tmp_path_factory.mktemp("dask-archive")
    files = []
    with warnings.catch_warnings():  # not meant for DANDI: its readiness warning is noise
        warnings.simplefilter("ignore")
        for units in (1, 2, 3, 5):
            trains = [[1.0 + u, 2.5 + u, 40.0 + u] for u in range(units)]
            sd = SpikeData(trains, length=100.0, metadata={"identifier": f"dask-{units}"})
            files.append((units, export_spikedata_to_nwb(sd, root / f"units-{units}.nwb")))
    with DandiStandIn(root / "archive") as server:
        server.published = {}
        for index in range(ASSETS):
            units, path = files[index % len(files)]
            asset_id = server.add_asset(DANDISET, f"sub-{index:02d}/sub-{index:02d}.nwb", path)
            server.published[asset_id] = units
        yield server


@pytest.fixture(scope="module")
def cluster(worker_env, prefect_harness):
    """A local Dask cluster of 4 worker processes, started once and scaled by the tests.

    The workers are forked from a server process that imported spikelab's flow once
    (``forkserver``), instead of each importing it anew (``spawn``, seconds per worker).
    """
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context().set_forkserver_preload(["distributed", "spikelab.flows.dandi", "pynwb"])
        with distributed.LocalCluster(
            n_workers=4,
            threads_per_worker=2,
            processes=True,
            dashboard_address=":0",
            env=worker_env,
        ) as started:
            yield started


def scaled_to(cluster, workers):
    """The cluster's scheduler address once exactly ``workers`` worker processes run."""
    import distributed

    cluster.scale(workers)
    with distributed.Client(cluster.scheduler_address) as client:
        deadline = time.monotonic() + 60
        while len(client.scheduler_info()["workers"]) != workers:
            assert time.monotonic() < deadline, f"the cluster did not reach {workers} workers"
            time.sleep(0.1)
    return cluster.scheduler_address


def lake_rows(lake):
    """The lake's assets rows (asset id, status) and units rows (asset id, unit index)."""
    units = open_units(lake).to_pyarrow_table(columns=["asset_id", "unit_index"])
    assets = open_assets(lake, None).to_pyarrow_table(columns=["asset_id", "status"])
    return (
        sorted(zip(*assets.to_pydict().values(), strict=True)),
        sorted(zip(*units.to_pydict().values(), strict=True)),
    )


@pytest.mark.parametrize("workers", [4, 2])
def test_the_nightly_on_dask_workers_lands_every_asset_once(archive, cluster, workers):
    address = scaled_to(cluster, workers)
    lake = f"s3://{BUCKET}/{workers}-workers"
    entry = DandisetEntry(id=DANDISET)

    def nightly():
        state = ingest_dandisets(
            lake=lake,
            api_base=archive.api_base,
            dandisets=[entry],
            concurrency=4,  # 4 assets read at once, on 4 of the cluster's threads
            task_runner="dask",
            dask_address=address,
            return_state=True,
        )
        (summary,) = run_summary(state)
        return summary

    first = nightly()
    assert first["counts"] == {"ok": ASSETS, "skipped": 0, "failed": 0}
    assert sorted(a["asset_id"] for a in first["assets"]) == sorted(archive.published)
    assets, units = lake_rows(lake)
    assert assets == sorted((asset_id, "ok") for asset_id in archive.published)
    assert len(set(units)) == len(units)  # no unit twice, even among superseded rows
    assert Counter(asset_id for asset_id, _ in units) == archive.published

    blob_requests = archive.count("blob")
    again = nightly()
    assert again["counts"] == {"ok": 0, "skipped": ASSETS, "failed": 0}
    assert archive.count("blob") == blob_requests
    assert lake_rows(lake) == (assets, units)


def test_the_files_flow_runs_on_the_same_cluster(cluster, tmp_path):
    flow = with_task_runner(ingest_files, "dask", dask_address=scaled_to(cluster, 2))
    assert type(flow.task_runner).__name__ == "DaskTaskRunner"
    inputs = write_demo_dataset(tmp_path / "inputs")
    summary = flow([str(p) for p in inputs], lake=str(tmp_path / "lake"))
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert connect(tmp_path / "lake").execute("SELECT count(*) FROM units").fetchone() == (50,)


@pytest.mark.parametrize(
    ("changed", "concurrency", "threads", "plan"),
    [
        (120, 32, 4, (15, 8)),  # 8 task runs: 2 per thread, all in flight
        (120, 32, 8, (8, 16)),
        (120, 2, 8, (30, 2)),  # the run's concurrency caps the assets read at once
        (3, 32, 8, (1, 16)),
        (100_000, 32, 8, (32, 16)),  # a task run never holds more than 32 assets
    ],
)
def test_a_dask_task_run_takes_a_batch_sized_from_the_cluster_threads(
    changed, concurrency, threads, plan
):
    from spikelab.flows._in_flight import dask_plan

    assert dask_plan(changed, concurrency, threads) == plan


def test_the_flow_sees_the_dask_cluster_threads(cluster):
    from prefect import flow

    from spikelab.flows.runners import dask_threads

    @flow
    def threads_seen():
        return dask_threads()

    assert threads_seen() is None  # its own thread pool
    on_dask = with_task_runner(threads_seen, "dask", dask_address=scaled_to(cluster, 2))
    assert on_dask() == 4  # 2 workers of 2 threads


def test_prefect_hands_a_sealed_batch_over_without_looking_inside():
    from prefect.utilities.collections import visit_collection

    from spikelab.flows._in_flight import Sealed

    batch = Sealed([("asset", None), ("other", None)])
    seen = []
    handed = visit_collection(batch, visit_fn=lambda x: seen.append(x) or x, return_data=True)
    assert handed is batch
    assert seen == [batch]  # not its list, tuples or strings


def test_a_batch_commits_while_the_files_of_the_batch_before_are_written(tmp_path, monkeypatch):
    import logging

    from publications import pending

    from spikelab.flows._publish import Publisher
    from spikelab.io import storage
    from spikelab.io.delta_lake import LakeWriter
    from spikelab.io.lake import Lake
    from spikelab.io.manifest import read_manifest

    committed = []  # each commit's units table version, as it lands
    publish, put_bytes = LakeWriter.publish, storage.put_bytes
    commits_seen = []  # commits landed when a's raster was written

    def recorded(self, *args, **kwargs):
        committed.append(publish(self, *args, **kwargs))
        return committed[-1]

    def written_late(destination, data):
        if str(destination).endswith("/a.png"):  # held until b's commit, 5 s at most
            deadline = time.monotonic() + 5
            while len(committed) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            commits_seen.append(len(committed))
        put_bytes(destination, data)

    monkeypatch.setattr(LakeWriter, "publish", recorded)
    monkeypatch.setattr(storage, "put_bytes", written_late)
    lake = Lake(str(tmp_path / "lake"))
    logger = logging.getLogger("test")
    with Publisher(lake, "run", logger, batch_size=1, max_delay_seconds=60) as publisher:
        publisher.add(pending("a", b"raster of a"))
        deadline = time.monotonic() + 20
        while not committed and time.monotonic() < deadline:
            time.sleep(0.01)
        publisher.add(pending("b", b"raster of b"))
    assert commits_seen == [2]  # b was committed while a's files were still being written
    outcomes = publisher.outcomes()
    assert {key[2]: o["status"] for key, o in outcomes.items()} == {"a": "ok", "b": "ok"}
    for name, version in (("a", 0), ("b", 1)):
        done = outcomes[("files", "p", name)]
        assert read_manifest(done["manifest"])["outputs"][0]["version"] == version
        assert storage.get_bytes(done["raster"]) == f"raster of {name}".encode()
    assert storage.list_files(storage.join(lake.root, "journals"), ".json") == []
