"""Has a span of time passed? Judged by two clocks: the wall clock and the device's own uptime.

The wall clock can be pushed forward (a rogue NTP answer, an operator with ``date``); alone, it
would free a used command id, lift a PIN lockout or drop a dose out of a rolling window early.
So the device also counts its *uptime*: monotonic seconds since this daemon started plus the
uptime persisted by earlier runs (``edge.commands.seen`` keeps it in commands.db). A span has
passed only when BOTH clocks say so; the wall time used is the daemon's trusted time (never
before its time floor), so a clock set back does not stretch a span either.

Uptime stands still while the device is off: after downtime a span lasts longer by the
uptime (a lockout outlasts a power cycle, a dose stays counted). That is the safe side for
what this module guards; callers bound each span so that it cannot last for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


class Uptime:
    """Seconds this device's daemon has run over all its runs: ``persisted`` plus monotonic time since."""

    def __init__(self, persisted: float = 0.0, mono: Callable[[], float] = time.monotonic):
        self._mono = mono
        self._mono0, self._persisted = mono(), max(0.0, float(persisted))

    def __call__(self) -> float:
        return self._persisted + (self._mono() - self._mono0)


def up_bound(until: float, now: float, uptime: float) -> float:
    """The uptime at which wall time ``until`` comes, if the wall time ``now`` is right."""
    return uptime + max(0.0, until - now)


@dataclass(frozen=True, slots=True)
class Moment:
    """A moment by both clocks: ``wall`` (UNIX time) and ``up`` (the device's uptime then)."""

    wall: float
    up: float

    def plus(self, seconds: float) -> Moment:
        return Moment(self.wall + seconds, self.up + seconds)

    def remaining(self, now: float, uptime: float) -> float:
        """Seconds until both clocks have reached this moment (0 once they have)."""
        return max(0.0, self.wall - now, self.up - uptime)

    def passed(self, now: float, uptime: float) -> bool:
        return self.remaining(now, uptime) <= 0.0


@dataclass(frozen=True)
class Clocks:
    """The two clocks a component judges spans by: ``now`` (the daemon's trusted time, or the
    wall clock outside the daemon) and ``uptime``. The daemon hands its own to each service."""

    now: Callable[[], float]
    uptime: Callable[[], float]

    def moment(self) -> Moment:
        """Now, by both clocks."""
        return Moment(self.now(), self.uptime())

    def until(self, wall: float) -> Moment:
        """Wall time ``wall`` as a moment, its uptime taken as if the wall clock were right now."""
        now, uptime = self.now(), self.uptime()
        return Moment(wall, up_bound(wall, now, uptime))

    def within(self, moment: Moment, span_s: float) -> Moment:
        """A kept end ``moment`` no further than ``span_s`` ahead of now by either clock: a span
        read back from disk cannot outlast its length because the persisted uptime was lost, or
        because the wall clock was pushed forward when it began."""
        now = self.moment()
        return Moment(min(moment.wall, now.wall + span_s), min(moment.up, now.up + span_s))
