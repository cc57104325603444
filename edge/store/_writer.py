"""Group commit: one thread folds concurrent appends into one durable transaction."""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.errors import StoreClosed, StoreError

_STOP = object()
# How long the writer waits, after a commit, for the producers it just woke to queue their
# next event before it commits without the stragglers: a bound on the latency it adds.
LINGER_S = 0.001


class Job:
    """One unit of work for the writer; the caller blocks on ``wait()``.

    Either ``fn`` (run inside the batch's transaction) or ``items`` (events to
    insert, prepared by the caller; the writer folds every insert job of a batch
    into as few statements as possible).
    """

    __slots__ = ("fn", "items", "size", "_done", "_next", "result", "error")

    def __init__(self, fn: Callable[[], Any] | None = None, size: int = 1, items: list | None = None):
        self.fn, self.items = fn, items
        self.size = len(items) if items is not None else size
        # A bare lock held until the writer finishes the job: a tenth of the cost of a
        # threading.Event, and the hot path creates one per append.
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._next: tuple[Job, ...] = ()  # callers of the same batch this one wakes (see wait)
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        try:
            self._done.release()
        except RuntimeError:
            pass  # already finished: by the caller before it in the batch and the writer both

    def wait(self) -> Any:
        self._done.acquire()
        # Pass the baton: wake the next two callers of this batch (a binary tree), so they
        # do not all contend for the GIL at once, and the last of 16 is 4 wake-ups away
        # from the commit, not 16 (each wake-up waits for a core on a busy machine).
        nxt, self._next = self._next, ()
        for job in nxt:
            job.finish()
        self.finish()  # wait() stays callable more than once
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommitWriter:
    """Owns the writer thread. ``run_batch(jobs, before_commit)`` is called with as many
    queued jobs as fit in ``batch_max``; it must run them in one transaction, call
    ``before_commit()`` right before COMMIT, and set each job's result or error.
    ``idle()`` runs when nothing arrived for ``idle_interval`` seconds.

    Each producer waits for its own commit, so the producers of one batch are the ones
    that make the next: after a commit the writer wakes them at once and waits (at most
    ``linger`` seconds) until as many jobs are queued as it just finished, then commits
    them together. Producers only append to a list; the one that completes the count
    wakes the writer: one wake-up per batch, not one per job, and a batch holds every
    producer instead of half of them.

    With ``inline``, a job submitted while nothing is queued and no batch is running is
    committed at once in the caller's thread (``submit`` returns when it is done): handing it to the writer and back costs two thread switches,
    each a wait for a core on a busy machine, and a lone producer (a driver's emit, one
    append_many) needs neither. ``_busy`` is held by whichever thread runs a batch (or the
    maintenance), and by the writer while it waits for its last batch's producers, so
    those never commit alone."""

    def __init__(self, run_batch, idle, *, batch_max: int, idle_interval: float,
                 linger: float = LINGER_S, inline: bool = False):
        self._mutex = _thread.allocate_lock()  # guards _items, _waiter, _want
        self._busy = _thread.allocate_lock()  # held while a batch runs (see above)
        self._inline = inline
        self._items: list = []  # queued jobs (and the stop marker), oldest first
        self._waiter: Any = None  # the lock the writer sleeps on, released to wake it
        self._want = 1
        self._run_batch, self._idle = run_batch, idle
        self._batch_max, self._idle_interval, self._linger = batch_max, idle_interval, linger
        self._closed = threading.Event()
        self._failure: StoreError | None = None  # why the writer thread died, if it did
        self._unwoken: list[Job] = []  # the last batch, until every caller surely woke
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self.batches = 0  # transactions committed (or rolled back); jobs / batches = fold factor
        self.jobs = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        if self._closed.is_set():
            raise self._failure or StoreClosed("the store is closed")
        if self._inline and not self._items and self._busy.acquire(blocking=False):
            try:
                if self._closed.is_set():
                    raise self._failure or StoreClosed("the store is closed")
                self._commit([job])
            except BaseException as exc:  # not the batch's own errors: the store is broken
                self._die(exc)  # the job already carries the error (see _commit)
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._busy.release()
            return job
        self._put(job)
        if self._closed.is_set():  # closed (or died) while we queued: never leave it waiting
            self._refuse_queued(after_stop=True)
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Finish every job already submitted, then stop the thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._put(_STOP)
        self._thread.join(timeout)
        if self._busy.acquire(timeout=timeout):  # a caller committing its own job finishes first
            self._busy.release()

    def _put(self, job: Any) -> None:
        with self._mutex:
            self._items.append(job)
            if self._waiter is not None and (len(self._items) >= self._want or job is _STOP):
                self._waiter.release()
                self._waiter = None

    def _wait_for(self, want: int, timeout: float) -> None:
        """Sleep until ``want`` items are queued or ``timeout`` seconds passed."""
        with self._mutex:
            if len(self._items) >= want or timeout <= 0:
                return
            waiter = _thread.allocate_lock()
            waiter.acquire()
            self._waiter, self._want = waiter, want
        waiter.acquire(timeout=timeout)
        with self._mutex:
            self._waiter = None

    def _take(self) -> list:
        """The oldest queued items, up to ``batch_max`` events or the stop marker."""
        with self._mutex:
            items, size, n = self._items, 0, 0
            while n < len(items) and size < self._batch_max:
                job = items[n]
                n += 1
                if job is _STOP:
                    break
                size += job.size
            taken, self._items = items[:n], items[n:]
            return taken

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:
            # Unexpected (the batch function handles its own errors): fail every caller
            # loudly rather than leave them blocked on a writer that is gone.
            self._failure = self._failure or _stopped(exc)
            raise
        finally:
            self._closed.set()
            self._wake_all()
            self._refuse_queued()

    def _die(self, exc: BaseException) -> None:
        """A batch run in a caller's thread failed unexpectedly: the store stops as if its
        writer had died (every later call fails loudly), and the writer thread exits."""
        self._failure = self._failure or _stopped(exc)
        self._closed.set()
        self._refuse_queued()
        self._put(_STOP)

    def _refuse_queued(self, after_stop: bool = False) -> None:
        """Anything queued after the stop marker (or after a failure) is refused, never dropped.
        ``after_stop``: a job queued as the store closed; what came before the marker is
        still the writer's to finish (and the marker its signal to stop)."""
        with self._mutex:
            if after_stop and _STOP in self._items:
                keep = self._items.index(_STOP) + 1
                items, self._items = self._items[keep:], self._items[:keep]
            else:
                items, self._items = self._items, []
        for job in items:
            if job is not _STOP:
                job.error = self._failure or StoreClosed("the store closed before this was written")
                job.finish()

    def _serve(self) -> None:
        # Maintenance is due by the clock, not only when idle: a device appending once a
        # second is never idle for a whole interval, and retention must still run.
        idle_due = time.monotonic() + self._idle_interval
        held = False  # _busy, kept from the last batch while its producers come back
        while True:
            if not held:
                self._wake_all()  # any caller the baton did not reach by now (see Job.wait)
                self._wait_for(1, idle_due - time.monotonic())
                self._busy.acquire()
            held = False
            try:
                if time.monotonic() >= idle_due:
                    self._idle()
                    idle_due = time.monotonic() + self._idle_interval
                jobs = self._take()
                stopping = bool(jobs) and jobs[-1] is _STOP
                if stopping:
                    jobs.pop()
                if jobs:
                    self._commit(jobs)
                if stopping:
                    self._wake_all()
                    return
                if len(jobs) > 1:  # its producers are coming back: commit them together
                    self._wait_for(len(jobs), self._linger)
                    self._wake_all()
                    held = True
            finally:
                if not held:
                    self._busy.release()

    def _commit(self, jobs: list[Job]) -> None:
        try:
            self._run_batch(jobs, _nothing)
        except BaseException as exc:  # not the batch's own errors: it reports those per job
            for job in jobs:
                job.result = None
                job.error = _stopped(exc)
                job.finish()
            raise
        # Wake the first caller only; each wakes two more (Job.wait). _wake_all is the
        # safety net for a caller that never waits: nobody waits longer than the linger.
        for i, job in enumerate(jobs):
            job._next = tuple(jobs[2 * i + 1:2 * i + 3])
        jobs[0].finish()
        if len(jobs) > 1:
            self._unwoken = jobs
        self.batches += 1
        self.jobs += len(jobs)

    def _wake_all(self) -> None:
        jobs, self._unwoken = self._unwoken, []
        for job in jobs:
            job.finish()


def _nothing() -> None:
    pass


def _stopped(exc: BaseException) -> StoreError:
    return StoreError(f"the store's writer stopped ({type(exc).__name__}: {exc}); restart the daemon")
