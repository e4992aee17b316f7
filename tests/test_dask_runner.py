"""Choosing the task runner: the flow's threads, or prefect-dask's DaskTaskRunner."""

import pytest

from spikelab.flows import ingest_files
from spikelab.flows.runners import with_task_runner


def test_without_an_address_a_local_cluster_of_processes_is_started_per_run():
    pytest.importorskip("prefect_dask")
    runner = with_task_runner(ingest_files, "dask").task_runner
    assert type(runner).__name__ == "DaskTaskRunner" and runner.address is None
    assert runner.cluster_kwargs["processes"] is True and runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["dashboard_address"] == ":0"  # never a taken 8787


def test_threads_keep_the_flow_and_unknown_runners_are_refused():
    assert with_task_runner(ingest_files, "threads") is ingest_files
    with pytest.raises(ValueError, match="task runner must be one of threads, dask"):
        with_task_runner(ingest_files, "ray")
