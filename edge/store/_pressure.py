"""Counting what a short disk cost, for the ``system.store_pressure`` alarm.

While the disk (or the cap) is short, appends are refused (telemetry first, then
normal events), pending events are dropped to make room, and a commit may fail
outright for space. Every one of those is counted here, by priority, outside the
database (a failed commit must not roll its own count back), and reported in one
``system.store_pressure`` alarm as soon as a commit succeeds: at once when the
episode starts, then at most every ``REPORT_INTERVAL_S`` while it lasts, and once
more when it ends. Alarms whose commit failed are kept in memory (bounded) and
written when there is room again.
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime

REPORT_INTERVAL_S = 10.0
PARKED_MAX = 10_000  # alarms kept in memory while nothing can be written
_PRIOS = ("alarm", "normal", "telemetry")


def _zero() -> dict[str, int]:
    return dict.fromkeys(_PRIOS, 0)


class Pressure:
    """Counters of one pressure episode; writer thread only."""

    def __init__(self):
        self.refused, self.failed = _zero(), _zero()
        self.parked: deque = deque()  # alarm events whose commit failed for space
        self.parked_lost = 0  # alarms beyond PARKED_MAX (the oldest kept)
        self.since: str | None = None
        self.dropped_base: dict[str, int] | None = None  # store drop counters at the episode start
        self.reports = 0
        self._last_report = float("-inf")
        self._ending = False
        self._last_log = float("-inf")

    @property
    def active(self) -> bool:
        return self.since is not None

    def _start(self, dropped_now: dict[str, int]) -> None:
        if self.since is None:
            self.since = datetime.now(UTC).isoformat(timespec="milliseconds")
            self.dropped_base = dict(dropped_now)
            self._last_report = float("-inf")  # the first report goes out at once

    def note(self, kind: str, priority: str, n: int, dropped_now: dict[str, int]) -> None:
        """Count ``n`` events of ``priority`` refused or failed (``kind``)."""
        self._start(dropped_now)
        getattr(self, kind)[priority] += n

    def note_dropped(self, dropped_now: dict[str, int]) -> None:
        self._start(dropped_now)

    def log_failure(self) -> bool:
        """True when a failed commit should be logged (the first, then one per interval)."""
        now = time.monotonic()
        if now - self._last_log < REPORT_INTERVAL_S:
            return False
        self._last_log = now
        return True

    def park(self, items: list) -> None:
        for item in items:
            if len(self.parked) >= PARKED_MAX:
                self.parked.popleft()
                self.parked_lost += 1
            self.parked.append(item)

    def take_parked(self) -> list:
        items = list(self.parked)
        self.parked.clear()
        return items

    def due(self, *, short: bool) -> bool:
        """A report should be written in this batch (``short``: the disk still limits the store)."""
        if not self.active:
            return False
        self._ending = not short and not self.parked
        return self._ending or time.monotonic() - self._last_report >= REPORT_INTERVAL_S

    def payload(self, dropped_now: dict[str, int], *, cap: int, max_bytes: int, used: int,
                free_bytes: int) -> dict:
        base = self.dropped_base or dropped_now
        return {
            "state": "ended" if self._ending else "ongoing",
            "since": self.since, "reason": "disk" if cap < max_bytes else "max_bytes",
            "refused": dict(self.refused), "failed_commits": dict(self.failed),
            "dropped": {p: dropped_now.get(p, 0) - base.get(p, 0) for p in _PRIOS},
            "alarms_kept_in_memory": len(self.parked), "alarms_lost": self.parked_lost,
            "cap_bytes": cap, "max_bytes": max_bytes, "used_bytes": used, "free_bytes": free_bytes,
        }

    def reported(self) -> None:
        """The report is committed: an ended episode is over; an ongoing one waits its interval."""
        self.reports += 1
        self._last_report = time.monotonic()
        if self._ending:
            reports = self.reports
            self.__init__()
            self.reports = reports
