"""Group commit: one thread folds concurrent appends into one durable transaction."""

from __future__ import annotations

import _thread
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.errors import StoreClosed, StoreError

_STOP = object()


class Job:
    """One unit of work for the writer; the caller blocks on ``wait()``.

    Either ``fn`` (run inside the batch's transaction) or ``items`` (events to
    insert, prepared by the caller; the writer folds every insert job of a batch
    into as few statements as possible).
    """

    __slots__ = ("fn", "items", "size", "_done", "result", "error")

    def __init__(self, fn: Callable[[], Any] | None = None, size: int = 1, items: list | None = None):
        self.fn, self.items = fn, items
        self.size = len(items) if items is not None else size
        # A bare lock held until the writer finishes the job: a tenth of the cost of a
        # threading.Event, and the hot path creates one per append.
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self._done.release()

    def wait(self) -> Any:
        self._done.acquire()
        self._done.release()  # wait() stays callable more than once
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommitWriter:
    """Owns the writer thread. ``run_batch(jobs, before_commit)`` is called with as many
    queued jobs as fit in ``batch_max``; it must run them in one transaction, call
    ``before_commit()`` right before COMMIT, and set each job's result or error.
    ``idle()`` runs when nothing arrived for ``idle_interval`` seconds."""

    def __init__(self, run_batch, idle, *, batch_max: int, idle_interval: float):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._run_batch, self._idle = run_batch, idle
        self._batch_max, self._idle_interval = batch_max, idle_interval
        self._closed = threading.Event()
        self._failure: StoreError | None = None  # why the writer thread died, if it did
        self._committed: list[Job] = []  # committed, callers not yet woken (see _loop)
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self.batches = 0  # transactions committed (or rolled back); jobs / batches = fold factor
        self.jobs = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        if self._closed.is_set():
            raise self._failure or StoreClosed("the store is closed")
        self._queue.put(job)
        if self._closed.is_set():  # closed (or died) while we queued: never leave it waiting
            self._refuse_queued()
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Finish every job already submitted, then stop the thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            # Unexpected (the batch function handles its own errors): fail every caller
            # loudly rather than leave them blocked on a writer that is gone.
            self._failure = StoreError(f"the store's writer stopped ({type(exc).__name__}: {exc}); "
                                       "restart the daemon")
            raise
        finally:
            self._closed.set()
            for job in self._committed:
                job.finish()
            self._committed = []
            self._refuse_queued()

    def _refuse_queued(self) -> None:
        """Anything queued after the stop marker (or after a failure) is refused, never dropped."""
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not _STOP:
                job.error = self._failure or StoreClosed("the store closed before this was written")
                job.finish()

    def _serve(self) -> None:
        stopping = False

        # self._committed: jobs whose batch is committed but whose callers are not yet woken.
        # They are woken right before the next batch's COMMIT (or at once when nothing else is
        # queued): the writer then does all of a batch's Python work while no producer is
        # runnable, and the producers run during the next fsync, when the writer needs no GIL.
        def wake_committed() -> None:
            committed, self._committed = self._committed, []
            for job in committed:
                job.finish()

        # Maintenance is due by the clock, not only when idle: a device appending once a
        # second is never idle for a whole interval, and retention must still run.
        idle_due = time.monotonic() + self._idle_interval
        while not stopping:
            if time.monotonic() >= idle_due:
                wake_committed()
                self._idle()
                idle_due = time.monotonic() + self._idle_interval
            try:
                if self._committed:
                    first = self._queue.get_nowait()
                else:
                    first = self._queue.get(timeout=max(0.0, idle_due - time.monotonic()))
            except queue.Empty:
                wake_committed()
                continue
            if first is _STOP:
                break
            jobs, size = [first], first.size
            while size < self._batch_max:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                jobs.append(job)
                size += job.size
            try:
                self._run_batch(jobs, wake_committed)
            except BaseException as exc:  # not the batch's own errors: it reports those per job
                for job in jobs:
                    job.result = None
                    job.error = StoreError(f"the store's writer stopped ({type(exc).__name__}: {exc})")
                    job.finish()
                raise
            finally:
                wake_committed()  # no-op when run_batch already did, as it should
            self.batches += 1
            self.jobs += len(jobs)
            self._committed = jobs
        wake_committed()
