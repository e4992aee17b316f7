"""Choose where a flow's tasks run: Prefect's thread pool (default) or a Dask cluster."""

from __future__ import annotations

import sys
from typing import Any

from prefect.context import FlowRunContext

from spikelab._optional import import_optional

TASK_RUNNERS = ("threads", "dask")
# A local cluster for one run: its dashboard takes any free port, so a Dask cluster the
# user already runs (on 8787) never makes the run fail.
_LOCAL_CLUSTER = {
    "n_workers": 2,
    "threads_per_worker": 2,
    "processes": True,
    "dashboard_address": ":0",
}


def with_task_runner(flow: Any, runner: str = "threads", *, dask_address: str | None = None) -> Any:
    """Return ``flow`` set to run its tasks on ``runner``.

    Parameters
    ----------
    flow : prefect.Flow
        One of spikelab's flows.
    runner : {"threads", "dask"}, default: "threads"
        ``threads`` keeps the flow's own thread pool; ``dask`` uses prefect-dask's
        ``DaskTaskRunner``: on ``dask_address`` when given (a running cluster, for more than
        one machine), else on a local cluster started for the run.
    dask_address : str | None, default: None
        Scheduler address of an existing Dask cluster.

    Raises
    ------
    ValueError
        An unknown runner.
    ImportError
        ``dask`` without prefect-dask installed (``pip install 'spikelab[dask]'``).
    """
    if runner not in TASK_RUNNERS:
        raise ValueError(f"task runner must be one of {', '.join(TASK_RUNNERS)}, got {runner!r}")
    if runner == "threads":
        return flow
    task_runners = import_optional("prefect_dask", "dask")
    options: dict[str, Any] = (
        {"address": dask_address} if dask_address else {"cluster_kwargs": dict(_LOCAL_CLUSTER)}
    )
    return flow.with_options(task_runner=task_runners.DaskTaskRunner(**options))


def dask_threads() -> int | None:
    """The threads of the Dask cluster the running flow's task runs go to.

    None when the flow runs its tasks in its own thread pool, or when the cluster has no
    worker yet (an adaptive cluster scaled to zero): the flow then sizes its task runs
    as for threads.
    """
    context = FlowRunContext.get()
    task_runners = sys.modules.get("prefect_dask.task_runners")  # imported by the runner
    if context is None or task_runners is None:
        return None
    if not isinstance(context.task_runner, task_runners.DaskTaskRunner):
        return None
    threads = sum(context.task_runner.client.nthreads().values())
    return threads or None
