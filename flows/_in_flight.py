"""Many task runs in flight, their results handed on as they finish, memory kept flat."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from prefect.futures import PrefectFuture

from spikelab.flows._runs import Outcome
from spikelab.tasks.outputs import Pending

MAX_ASSETS_PER_TASK_RUN = 8
# On Dask a task run costs about 0.2 s of CPU (Prefect's context sent with the submit, and
# rebuilt with its clients on the worker): a batch is sized so that each thread of the
# cluster gets about this many task runs, each of at most MAX_ASSETS_PER_DASK_RUN assets.
TASK_RUNS_PER_DASK_THREAD = 2
MAX_ASSETS_PER_DASK_RUN = 32

T = TypeVar("T")


class Sealed(Generic[T]):
    """A task run's argument handed over as it is: Prefect does not look inside.

    Prefect walks every list, dict, dataclass and model a task run is given, looking for
    futures, and rebuilds each dataclass it passes: three times for a Dask submit and once
    more on the worker. A batch of assets in a box it does not open costs none of that,
    however many assets it holds.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<sealed {type(self.value).__name__}>"


class AssetResults:
    """A task run's per-asset results, in one box.

    Prefect keeps a small record of every object a task run returns and of each item of a
    returned list or dict, for the whole flow run; one box per task run keeps that from
    growing with the number of assets. It also shows short in Prefect's logs.
    """

    __slots__ = ("items",)

    def __init__(self, items: list[Outcome | Pending]) -> None:
        self.items = items

    def __repr__(self) -> str:
        return f"<results of {len(self.items)} asset(s)>"


def batch_size(changed: int, concurrency: int) -> int:
    """Assets per task run: one when there are few, up to ``MAX_ASSETS_PER_TASK_RUN``.

    Enough task runs that every one of ``concurrency`` slots gets about two; a task run
    costs the Prefect server about 20 KB of database and 50 ms of CPU, so a large
    dandiset shares them among a few assets.
    """
    return max(1, min(MAX_ASSETS_PER_TASK_RUN, -(-changed // (2 * concurrency))))


def dask_plan(changed: int, concurrency: int, threads: int) -> tuple[int, int]:
    """Assets per task run and task runs in flight, on a Dask cluster of ``threads`` threads.

    A Dask thread reads its task run's assets one at a time, so the cluster reads at most
    ``min(concurrency, threads)`` assets at once. Up to twice as many task runs as threads
    are in flight (within ``concurrency``), so a thread that finishes one finds the next
    waiting; each thread gets about ``TASK_RUNS_PER_DASK_THREAD`` task runs of the
    dandiset, so the per-task-run cost is shared among many assets.

    Parameters
    ----------
    changed : int
        Assets to ingest.
    concurrency : int
        The run's cap on assets read at once.
    threads : int
        The cluster's threads, over all its workers (at least 1).

    Returns
    -------
    tuple of int
        Assets per task run, task runs in flight.
    """
    slots = max(1, min(concurrency, threads))
    per_run = -(-changed // (TASK_RUNS_PER_DASK_THREAD * slots))
    return max(1, min(MAX_ASSETS_PER_DASK_RUN, per_run)), min(concurrency, 2 * threads)


def run_in_flight(
    batches: Iterable[list[int]],
    submit: Callable[[list[int]], PrefectFuture[Any]],
    window: int,
) -> Iterator[tuple[int, Outcome | Pending]]:
    """Submit ``batches`` (lists of asset indexes), at most ``window`` task runs at once.

    Yields ``(index, result)`` as each task run finishes, and forgets its future, so the
    run holds at most ``window`` task runs' data whatever the number of assets.
    """
    finished: queue.SimpleQueue[PrefectFuture[Any]] = queue.SimpleQueue()
    running: dict[PrefectFuture[Any], list[int]] = {}
    pending = iter(batches)

    def fill() -> None:
        while len(running) < window and (batch := next(pending, None)) is not None:
            future = submit(batch)
            running[future] = batch
            future.add_done_callback(finished.put)

    fill()
    while running:
        future = finished.get()
        indexes = running.pop(future)
        fill()
        results = future.result(raise_on_failure=False)
        if isinstance(results, BaseException):  # a crash, not a failed asset
            raise results
        # Emptied: Prefect keeps a finished task run's result reachable for a while (in
        # reference cycles the collector frees late, some to the end of the flow run); the
        # assets' publications must not wait for it.
        items, results.items = results.items, []
        yield from zip(indexes, items, strict=True)
