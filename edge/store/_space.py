"""What the store does when the disk is short (a mixin of ``Store``, inside a commit only).

A commit that fails for want of space fails every job of its batch with
``StoreNoSpace`` (a ``StoreFull``: drivers already carry on after it), counts the
events by priority, keeps alarms in memory (bounded) to be written first in the next
batch, and wakes the writer every second until they are. The
``system.store_pressure`` alarm with those counts goes into the first batch that can
be committed (see ``_pressure``).
"""

from __future__ import annotations

import threading
import time

import structlog

from edge.errors import StoreError, StoreNoSpace
from edge.events import wire
from edge.store._disk import no_space
from edge.store._schema import PRIORITY_NAME
from edge.store._writer import Job

log = structlog.get_logger("edge.store")
# At most one system.events_dropped report per interval (the first at once): each report is
# an alarm that is never evicted, so one per drop would fill a full store with its reports.
DROP_REPORT_INTERVAL_S = 10.0
FULL_ALARM_INTERVAL_S = 60.0
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
            alarms = [event for event in job.items if wire(event)[2] == _ALARM]
            if job is not self._retried:  # kept alarms failing again are not counted again
                for event in job.items:
                    self._pressure.note("failed", PRIORITY_NAME[wire(event)[2]], 1, dropped)
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

    def _report_drops(self, force: bool = False) -> None:
        """Write one system.events_dropped alarm for the drops since the last report: the first
        at once, later ones at most every DROP_REPORT_INTERVAL_S (the writer is woken for it).
        ``seqs`` names exactly the seqs that never left the device, as [lo, hi] ranges."""
        report = self._unreported
        if not report["count"]:
            return
        wait = self._last_drop_report + DROP_REPORT_INTERVAL_S - time.monotonic()
        if not force and wait > 0:
            self._schedule_retry(wait)
            return
        log.warning("store_dropped_pending", count=report["count"], by_priority=report["by_priority"])
        self._write_rows([self._system_event("system.events_dropped", {
            "reason": "store_full", **report, "seqs": [list(r) for r in report["seqs"]],
            "dropped_total": {p: self._counters[f"dropped_{p}"] for p in ("normal", "telemetry")}})])
        self._unreported = empty_report()
        self._last_drop_report = time.monotonic()
        for prio in ("normal", "telemetry"):
            self._counters[f"reported_{prio}"] = self._counters[f"dropped_{prio}"]

    def _enter_full(self, priority: int, *, refused: bool) -> None:
        """Start (or widen) a full episode; the system.store_full alarm is raised once per episode."""
        self._full_prio = max(self._full_prio, priority) if self._full else priority
        if self._full:
            return
        self._full = True
        # A cap that follows the disk can end and restart episodes often: one alarm (and log
        # line) per interval at most; system.store_pressure carries the counts meanwhile.
        if time.monotonic() - getattr(self, "_full_alarm_at", float("-inf")) < FULL_ALARM_INTERVAL_S:
            return
        self._full_alarm_at = time.monotonic()  # not rolled back: a failed commit retries quietly
        log.error("store_full", used_bytes=self._used, max_bytes=self.settings.max_bytes, cap_bytes=self._cap,
                  refused_priority=PRIORITY_NAME[priority] if refused else None)
        self._write_rows([self._system_event("system.store_full", {
            "max_bytes": self.settings.max_bytes, "cap_bytes": self._cap, "used_bytes": self._used,
            "refused_priority": PRIORITY_NAME[priority] if refused else None,
            "alarms_past_cap": not refused})])


def protected_sql(ranges: list[tuple[int, int]], most: int = 32) -> str:
    """`` AND seq NOT BETWEEN ..`` for ``ranges``, merged into ``most`` clauses at most (merging
    protects the gaps too: safe, as protected rows are only kept longer)."""
    ranges = sorted(ranges)
    while len(ranges) > most:
        gaps = sorted(range(len(ranges) - 1), key=lambda i: ranges[i + 1][0] - ranges[i][1])[:len(ranges) - most]
        for i in sorted(gaps, reverse=True):
            ranges[i:i + 2] = [(ranges[i][0], max(ranges[i][1], ranges[i + 1][1]))]
    return "".join(f" AND seq NOT BETWEEN {int(lo)} AND {int(hi)}" for lo, hi in ranges)


def empty_report() -> dict:
    return {"count": 0, "by_priority": {}, "seq_from": None, "seq_to": None, "seqs": ()}
