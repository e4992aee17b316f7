"""The files flow on prefect-dask's DaskTaskRunner, with a local cluster."""

import pytest

from spikelab.demo_data import write_demo_dataset
from spikelab.flows import ingest_files
from spikelab.flows.runners import with_task_runner
from spikelab.io.lake import connect


@pytest.mark.usefixtures("prefect_harness")
def test_files_flow_on_a_local_dask_cluster(tmp_path):
    inputs = write_demo_dataset(tmp_path / "inputs")
    flow = with_task_runner(ingest_files, "dask")
    assert type(flow.task_runner).__name__ == "DaskTaskRunner"
    summary = flow([str(p) for p in inputs], lake=str(tmp_path / "lake"))
    assert summary["counts"] == {"ok": 3, "skipped": 0, "failed": 0}
    assert connect(tmp_path / "lake").execute("SELECT count(*) FROM units").fetchone() == (50,)


def test_threads_keep_the_flow_and_unknown_runners_are_refused():
    assert with_task_runner(ingest_files, "threads") is ingest_files
    with pytest.raises(ValueError, match="task runner must be one of threads, dask"):
        with_task_runner(ingest_files, "ray")
