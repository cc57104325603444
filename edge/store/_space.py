"""What the store does when the disk is short (a mixin of ``Store``, writer thread only).

A commit that fails for want of space fails every job of its batch with
``StoreNoSpace`` (a ``StoreFull``: drivers already carry on after it), counts the
events by priority, keeps alarms in memory (bounded) to be written first in the next
batch, and wakes the writer every second until they are. The
``system.store_pressure`` alarm with those counts goes into the first batch that can
be committed (see ``_pressure``).
"""

from __future__ import annotations

import threading

import structlog

from edge.errors import StoreError, StoreNoSpace
from edge.store._disk import no_space
from edge.store._schema import PRIORITY_NAME
from edge.store._writer import Job

log = structlog.get_logger("edge.store")
_ALARM = 0


class SpaceMixin:
    def _failed(self, jobs: list[Job], exc: Exception) -> None:
        """A batch that could not be committed: every caller learns why. For want of space,
        alarms are kept in memory and written when there is room; the rest is counted."""
        if not no_space(exc):
            log.error("store_commit_failed", error=str(exc))
            for job in jobs:
                job.result, job.error = None, StoreError(f"could not write to the store: {exc}")
            return
        self._disk.stale()
        if self._pressure.log_failure():  # at most one line per interval: the disk may stay full
            log.error("store_commit_failed", error=str(exc), no_space=True, **self._pressure.failed)
        dropped = self._dropped_now()
        for job in jobs:
            job.result = None
            if job.items is None:
                job.error = StoreNoSpace(f"the disk is full: {exc}")
                continue
            alarms = [item for item in job.items if item[4] == _ALARM]
            if job is not self._retried:  # kept alarms failing again are not counted again
                for item in job.items:
                    self._pressure.note("failed", PRIORITY_NAME[item[4]], 1, dropped)
            self._pressure.park(alarms)
            job.error = StoreNoSpace(
                "the disk is full; " + ("the alarm is kept in memory and stored when there is room"
                                        if len(alarms) == len(job.items) else "the event was not stored"))
        self._schedule_retry()

    def _schedule_retry(self, delay: float = 1.0) -> None:
        """Wake the writer soon: kept alarms and the pressure report must not wait for an append."""
        timer = self._retry_timer
        if timer is not None and timer.is_alive():
            return

        def poke() -> None:
            try:
                self._writer.submit(Job(lambda: None))
            except StoreError:
                pass  # closed meanwhile

        self._retry_timer = threading.Timer(delay, poke)
        self._retry_timer.daemon = True
        self._retry_timer.start()

    def _dropped_now(self) -> dict[str, int]:
        return {p: self._counters.get(f"dropped_{p}", 0) for p in ("alarm", "normal", "telemetry")}

    def _report_pressure(self) -> None:
        """Write the system.store_pressure alarm into this batch when one is due."""
        pressure = self._pressure
        # Short while full or within a twentieth of the disk's cap: an episode does not end (and
        # restart, with one report each) every time an eviction makes a little room.
        short = self._full or (self._disk.limited and
                               self._cap - self._used < max(self.settings.reserve_bytes, self._cap // 20))
        if not pressure.due(short=short):
            if pressure.active:
                self._schedule_retry(2.0)  # an interval report or the end must still be written
            return
        payload = pressure.payload(self._dropped_now(), cap=self._cap, max_bytes=self.settings.max_bytes,
                                   used=self._used, free_bytes=self._disk.free_bytes)
        self._flush_rows()
        self._write_rows([self._system_event("system.store_pressure", payload)])
        self._reporting = payload  # logged once committed
