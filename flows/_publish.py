"""The publisher: finished assets go into the lake's Delta tables a batch per commit.

A commit costs tens of milliseconds whatever it carries, so the flow hands each asset's
:class:`~spikelab.tasks.outputs.Pending` publication to one :class:`Publisher`, whose
thread commits when ``batch_size`` assets are waiting, when the oldest has waited
``max_delay_seconds``, and when the run closes it. After a commit it writes each asset's
raster PNG and manifest (which records the table version), several assets at once (an
object store answers each write after a round trip), while the thread goes on to the next
commit: a batch's files are written during the next batch's commit, never later than the
end of it. A failed asset's commit deletes its rows and its raster goes. A journal, written
while the units commit and in before the assets commit that publishes, lets a later run
finish that work if this one is killed in between (:mod:`spikelab.io.publish_journal`); a
writer thread removes it once the batch's files are in.
A batch whose commit fails is committed again one asset at a time, so one asset that
cannot be published fails alone.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger

from spikelab.exceptions import LakeKeyConflictError
from spikelab.flows._runs import (
    Outcome,
    current_flow_run_id,
    key_of,
    log_failure,
    manifest_path,
    outcome,
)
from spikelab.io import delta_lake, storage
from spikelab.io.arrow_memory import use_system_allocator
from spikelab.io.lake import Lake
from spikelab.io.manifest import put_manifest, record_failure, with_table_version
from spikelab.io.publish_journal import write_journal
from spikelab.tasks.load import one_line
from spikelab.tasks.outputs import Pending, removal

BATCH_SIZE = 16
MAX_DELAY_SECONDS = 1.0
# A due commit takes every asset waiting, up to this many: when assets arrive faster than
# commits land, commits grow instead of queueing (a commit's cost is mostly per commit).
MAX_BATCH_SIZE = 256
WRITERS = 8  # threads writing the committed assets' rasters and manifests


class Publisher:
    """Commit pending publications in batches, from a thread of its own.

    Use it as a context manager (or call :meth:`close`): leaving it commits what is left
    and waits for the thread. :meth:`outcomes` then gives each published asset's outcome.

    Parameters
    ----------
    lake : Lake
        The lake to publish into.
    flow_run_id : str
        Recorded in the commits.
    logger : logging.Logger or LoggerAdapter
        Where failures are logged (the flow run's logger: the thread has no run context).
    batch_size : int, default: 16
        Commit as soon as this many assets wait (a commit then takes every waiting asset,
        up to ``MAX_BATCH_SIZE``).
    max_delay_seconds : float, default: 1.0
        Commit once the oldest waiting asset has waited this long.
    """

    def __init__(
        self,
        lake: Lake,
        flow_run_id: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        *,
        batch_size: int = BATCH_SIZE,
        max_delay_seconds: float = MAX_DELAY_SECONDS,
    ) -> None:
        use_system_allocator()  # a run's process builds and drops tables for hours
        self.lake = lake
        self.writer = delta_lake.LakeWriter(lake)  # used by the publishing thread only
        self.flow_run_id = flow_run_id
        self.logger = logger
        self.batch_size = batch_size
        self.max_delay_seconds = max_delay_seconds
        self._waiting: list[tuple[float, Pending]] = []
        self._done: dict[tuple[str, str, str], Outcome] = {}
        self._closing = False
        self._error: BaseException | None = None
        self._wakeup = threading.Condition()
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="spikelab-publisher-write")
        self._journaling = ThreadPoolExecutor(1, thread_name_prefix="spikelab-publisher-journal")
        # the file writes of the batch committed last, until they are waited for
        self._writing: list[Future[None]] | None = None
        self._thread = threading.Thread(target=self._run, name="spikelab-publisher", daemon=True)
        self._thread.start()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *error: object) -> None:
        self.close()

    def add(self, pending: Pending) -> None:
        """Queue one asset for the next commit."""
        with self._wakeup:
            self._waiting.append((time.monotonic(), pending))
            self._wakeup.notify()

    def close(self) -> None:
        """Commit every asset still waiting and stop the thread.

        Raises
        ------
        BaseException
            What stopped the thread, if anything did (a bug, not a failed asset).
        """
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()
        self._writers.shutdown()
        self._journaling.shutdown()
        if self._error is not None:
            raise self._error

    def outcomes(self) -> dict[tuple[str, str, str], Outcome]:
        """Each published asset's outcome, by ``(source, dataset_id, asset_id)``, so far."""
        with self._wakeup:
            return dict(self._done)

    def _run(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._commit(batch)
            self._written()
        except BaseException as error:  # noqa: BLE001 - handed to close()
            self._error = error

    def _next_batch(self) -> list[Pending] | None:
        """Wait for a batch to be due; None once closing with nothing left."""
        with self._wakeup:
            while True:
                if self._waiting and (self._closing or self._due()):
                    size = max(self.batch_size, MAX_BATCH_SIZE)
                    batch = [pending for _, pending in self._waiting[:size]]
                    del self._waiting[:size]
                    return batch
                if self._closing:
                    return None
                timeout = None
                if self._waiting:
                    oldest = self._waiting[0][0]
                    timeout = max(0.0, oldest + self.max_delay_seconds - time.monotonic())
                self._wakeup.wait(timeout)

    def _due(self) -> bool:
        oldest = self._waiting[0][0]
        return (
            len(self._waiting) >= self.batch_size
            or time.monotonic() - oldest >= self.max_delay_seconds
        )

    def _commit(self, batch: list[Pending]) -> None:
        """Publish ``batch`` in one commit; on failure, each asset alone."""
        for pending in batch:
            if pending["status"] == "ok":
                pending["manifest"]["outputs"] = self._outputs(pending)
        publications = [
            delta_lake.Publication(
                key_of(p["target"]),
                p["units"] if p["units"] is not None else delta_lake.UNITS_SCHEMA.empty_table(),
                p["manifest"],
                p.get("owner"),
            )
            for p in batch
        ]
        rasters = {key_of(p["target"]): p["raster"] or b"" for p in batch}
        journaled = self._journaling.submit(write_journal, self.lake, rasters)
        try:  # the journal is written while the units commit, and is in before the assets'
            version = self.writer.publish(
                publications, flow_run_id=self.flow_run_id, before_assets=journaled.result
            )
        except Exception as error:  # noqa: BLE001 - the assets fail, the run goes on
            self._drop(_path_of(journaled))  # each asset is committed again, with a journal
            if len(batch) > 1:
                for pending in batch:
                    self._commit([pending])
            else:
                self._fail(batch[0], error)
            return
        self._written()  # the batch before: its files are in
        finish = partial(self._finish, version=version)
        writes = [self._writers.submit(finish, pending) for pending in batch]
        self._writing = writes
        self._writers.submit(self._drop_once_written, journaled.result(), writes)

    def _written(self) -> None:
        """Wait for the files of the batch committed last (its journal goes on its own).

        A write that failed raises here (a bug, not a failed asset: it stops the thread).
        """
        if self._writing is None:
            return
        writes, self._writing = self._writing, None
        for write in writes:
            write.result()

    def _drop_once_written(self, journal: str, writes: list[Future[None]]) -> None:
        """Remove a batch's journal once its files are in (kept if a write failed).

        Run by a writer thread after the batch's writes (submitted before it, so each has
        started), leaving the publishing thread free for the next commit.
        """
        wait(writes)
        if all(write.exception() is None for write in writes):
            self._drop(journal)

    def _drop(self, journal: str | None) -> None:
        """Remove a batch's journal; one that stays is only work for a later run's repair."""
        if journal is None:
            return
        try:
            storage.remove(journal)
        except Exception as error:  # noqa: BLE001 - the assets have landed
            self.logger.warning("could not remove the journal %s: %s", journal, one_line(error))

    def _outputs(self, pending: Pending) -> list[dict[str, Any]]:
        """The outputs an ok asset's manifest lists: its table rows, its raster, the rest."""
        raster = pending["raster"] or b""
        units = pending["units"]
        return [
            {"table": "units", "version": None, "rows": units.num_rows if units else 0},
            {
                "path": self.lake.raster_path(*key_of(pending["target"])),
                "sha256": hashlib.sha256(raster).hexdigest(),
                "rows": None,
            },
            *pending["outputs"],
        ]

    def _finish(self, pending: Pending, version: int | None) -> None:
        """Write an asset's raster and manifest after its commit, and record its outcome."""
        target, manifest = pending["target"], pending["manifest"]
        key = key_of(target)
        path = manifest_path(self.lake, target)
        raster = self.lake.raster_path(*key)
        published = pending["status"] == "ok"
        if published:
            manifest = with_table_version(manifest, version)
            storage.put_bytes(raster, pending["raster"] or b"")
            put_manifest(path, manifest)
        else:
            storage.remove(raster)
        # In the lake now: let the rows and picture go, though Prefect may keep the task
        # run's result (this dict) to the end of the flow run.
        pending["units"], pending["raster"] = None, None
        result = outcome(
            target,
            pending["status"],
            pending["seconds"],
            path,
            manifest,
            error=pending["note"],
            raster=raster if published else None,
        )
        with self._wakeup:
            self._done[key] = result

    def _fail(self, pending: Pending, error: Exception) -> None:
        """Record an asset whose commit failed, keeping its last good publication if any.

        An asset refused because its key belongs to another input records nothing.
        """
        target = pending["target"]
        message = one_line(error)
        log_failure(self.logger, "/".join(key_of(target)), message, error)
        path = manifest_path(self.lake, target)
        if isinstance(error, LakeKeyConflictError):  # the key and its manifest are another's
            result = outcome(target, "failed", pending["seconds"], path, {}, error=message)
            with self._wakeup:
                self._done[key_of(target)] = result
            return
        manifest = pending["manifest"]
        recorded = record_failure(
            path,
            **target,
            error=message,
            version=manifest.get("version"),
            source_reference=manifest.get("source_reference"),
            input=manifest.get("input"),
            flow_run_id=self.flow_run_id,
            warnings=manifest.get("warnings"),
        )
        if recorded["status"] == "failed" and pending["status"] == "ok":
            self._commit([removal(target, recorded, pending["seconds"])])
        result = outcome(target, "failed", pending["seconds"], path, {}, error=message)
        with self._wakeup:
            self._done[key_of(target)] = result


def _path_of(journaled: Future[str]) -> str | None:
    """The journal a write made, once it is done; None if the write failed."""
    try:
        return journaled.result()
    except Exception:  # noqa: BLE001 - no journal to remove
        return None


def publish_results(
    lake: Lake, items: Sequence[Outcome | Pending | PrefectFuture[Any]], label: str
) -> list[Outcome]:
    """Every asset's outcome, in the order of ``items``, once the publishable are published.

    ``items`` are outcomes, pending publications, and futures of per-asset tasks that
    return either; each pending publication goes to one :class:`Publisher` as soon as it
    is known. A progress bar shows the tasks finishing on a terminal.
    """
    from tqdm import tqdm

    futures = [item for item in items if isinstance(item, PrefectFuture)]
    with Publisher(lake, current_flow_run_id(), get_run_logger()) as publisher:
        for item in items:
            if not isinstance(item, PrefectFuture) and "target" in item:
                publisher.add(item)  # type: ignore[arg-type]
        with tqdm(total=len(futures), desc=label, unit="asset", disable=None, leave=False) as bar:
            for future in as_completed(futures):
                result = future.result()
                if "target" in result:
                    publisher.add(result)
                bar.update()
    published = publisher.outcomes()
    outcomes = []
    for item in items:
        result = item.result() if isinstance(item, PrefectFuture) else item
        outcomes.append(published[key_of(result["target"])] if "target" in result else result)
    return outcomes


def publish_as_they_come(
    lake: Lake,
    decided: Sequence[Outcome | Pending | None],
    results: Iterable[tuple[int, Outcome | Pending]],
    label: str,
) -> list[Outcome]:
    """Every asset's outcome, in the order of ``decided``, once the publishable are published.

    ``decided`` holds what the flow knew before any task ran (an outcome, a pending
    publication, or None for an asset a task run decides); ``results`` yields
    ``(index, outcome or pending)`` for each None, in any order, as the task runs finish.
    Each pending publication goes to one :class:`Publisher` as soon as it is known and
    nothing else keeps it, so memory does not grow with the number of assets. A progress
    bar shows the assets finishing on a terminal.
    """
    from tqdm import tqdm

    slots: list[Outcome | tuple[str, str, str] | None] = []
    with Publisher(lake, current_flow_run_id(), get_run_logger()) as publisher:

        def take(item: Outcome | Pending) -> Outcome | tuple[str, str, str]:
            if "target" in item:
                publisher.add(item)  # type: ignore[arg-type]
                return key_of(item["target"])  # type: ignore[typeddict-item]
            return item  # type: ignore[return-value]

        slots = [None if item is None else take(item) for item in decided]
        total = sum(item is None for item in decided)
        with tqdm(total=total, desc=label, unit="asset", disable=None, leave=False) as bar:
            for index, result in results:
                slots[index] = take(result)
                bar.update()
    published = publisher.outcomes()
    return [published[slot] if isinstance(slot, tuple) else slot for slot in slots]  # type: ignore[misc]
