"""Rate limits: a token bucket, and one report per flood instead of one record per refusal.

``TokenBucket`` caps a rate with a burst allowance: ``take`` waits for its turn (the
learning downloads' bandwidth), ``try_take`` answers at once (a reader's card reads).
``FloodReport`` turns the refusals a limit makes into a few events: one when a flood
starts, a count per ``window_s`` while it lasts, a total when it has been quiet for a
whole window. A flood that stops and starts again within a window is the same flood,
so however the refusals are spread there is at most one start per window.
``ChangeFold`` puts both to work for a state that can flap (a tamper switch, a reader's
link): each change an alarm within a limit, the rest counted in one flood, the state the
flood leaves alarmed at its next report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

#: A flapping state's changes alarmed one by one: 6 at once (a case opened and closed for a visit, a
#: power cut and its return, a cable reseated), then one every 30 s. Past that, a flapping contact or
#: a hostile peripheral would be an alarm per poll that the store never evicts (over a million a day).
CHANGE_RATE, CHANGE_BURST = 1 / 30, 6
_NEVER = object()  # a state never alarmed: whatever it is, it is news


class TokenBucket:
    """``burst`` units at once, then ``rate`` units a second (rate 0: unlimited)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst = rate, max(burst, 1)
        self._clock = clock
        self._tokens = float(self.burst)
        self._at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def try_take(self, n: float = 1) -> bool:
        """Take ``n`` units if they are there now; False (nothing taken) if not."""
        if self.rate <= 0:
            return True
        with self._lock:
            self._refill()
            if self._tokens < n:
                return False
            self._tokens -= n
            return True

    def take(self, n: float, stop: threading.Event) -> bool:
        """Take ``n`` units, waiting as long as the debt needs; False if ``stop`` was set meanwhile."""
        if self.rate <= 0:
            return True
        with self._lock:  # one waiter at a time keeps the order fair
            self._refill()
            self._tokens -= n
            debt = -self._tokens
        return debt <= 0 or not stop.wait(debt / self.rate)


class FloodReport:
    """Counts refusals; ``report(state, suppressed, total, duration_s)`` is called at most once a window.

    ``state``: ``started`` (the first refusal, ``suppressed`` 1), ``continuing`` (refusals in
    the window just ended), ``ended`` (a whole window without one; ``total`` is the flood's).
    ``suppressed`` adds up to ``total`` over one flood's reports. Call ``tick`` now and then
    (a driver's loop): it sends the window and end reports. One thread only.
    """

    def __init__(self, window_s: float, report: Callable[[str, int, int, float], None],
                 clock: Callable[[], float] = time.monotonic):
        self.window_s, self._report, self._clock = window_s, report, clock
        self.active = False
        self.total = 0
        self._pending = 0
        self._since = self._window_at = self._last = 0.0

    def refused(self) -> None:
        now = self._clock()
        self._last = now
        if self.active:
            self.total += 1
            self._pending += 1
            return
        self.active, self.total, self._pending = True, 1, 0
        self._since = self._window_at = now
        self._report("started", 1, 1, 0.0)

    def tick(self) -> None:
        if not self.active:
            return
        now = self._clock()
        if now - self._last >= self.window_s:  # quiet for a whole window: over (lasted to its last refusal)
            self.active = False
            pending, self._pending = self._pending, 0
            self._report("ended", pending, self.total, round(self._last - self._since, 3))
        elif now - self._window_at >= self.window_s:
            self._window_at = now
            if self._pending:
                pending, self._pending = self._pending, 0
                self._report("continuing", pending, self.total, round(now - self._since, 3))


class ChangeFold:
    """Alarms for states that can flap, bounded: a change is an alarm at once within ``burst``
    then ``rate`` a second; past it, changes are counted in one flood and the state they leave
    is alarmed at the flood's next report (``continuing`` or ``ended``) if it is not the one
    alarmed last. So a real change is alarmed at once, the final state always (at most a
    ``window_s`` after the flapping stops), and the flapping in between is a few reports.

    ``alarm(key, value)`` raises the alarm of ``key`` being ``value``; ``report`` is the
    FloodReport's (``started`` from ``changed``, the others from ``tick``: call it now and
    then). ``initial``: states known without an alarm (a closed switch at start). A key not in
    it has never been alarmed, so its state is always news. One thread only.
    """

    def __init__(self, window_s: float, alarm: Callable[[Hashable, Any], None],
                 report: Callable[[str, int, int, float], None], *, initial: dict | None = None,
                 rate: float = CHANGE_RATE, burst: int = CHANGE_BURST, clock: Callable[[], float] = time.monotonic):
        self.window_s, self.rate, self.burst = window_s, rate, burst
        self._alarm, self._report = alarm, report
        self._bucket = TokenBucket(rate, burst, clock)
        self._flood = FloodReport(window_s, self._reported, clock)
        self.state: dict = dict(initial or {})
        self._alarmed: dict = dict(self.state)
        self.suppressed = 0  # changes not alarmed one by one, ever

    @property
    def active(self) -> bool:
        """A flood is on (changes over the limit, and not yet a whole window quiet)."""
        return self._flood.active

    def changed(self, key: Hashable, value: Any) -> bool:
        """``key`` is now ``value``: True when alarmed now, False when counted in the flood."""
        self.state[key] = value
        if self._bucket.try_take():
            self._raise(key, value)
            return True
        self.suppressed += 1
        self._flood.refused()
        return False

    def known(self, key: Hashable, value: Any) -> None:
        """``key`` is now ``value`` and recorded outside the fold (a legitimate change, not folded):
        no alarm, and no flood report raises it again."""
        self.state[key] = self._alarmed[key] = value

    def tick(self) -> None:
        self._flood.tick()

    def describe(self, state: str, suppressed: int, total: int, changes: str) -> str:
        """The ``detail`` of a flood report, ``changes`` naming what flapped ("tamper changes")."""
        limit = f"{self.burst} at once, then one every {1 / self.rate:g}s"
        return {"started": f"{changes} faster than one alarm each may ({limit}): each is no longer an alarm "
                           "of its own (a flapping contact, a cable being interfered with, or a hostile "
                           "peripheral?); they are counted, and the state they leave is alarmed",
                "continuing": f"{suppressed} {changes} not alarmed one by one in the last {self.window_s:g}s",
                "ended": f"no {changes} over the limit for {self.window_s:g}s; {total} in all"}[state]

    def payload(self, state: str, suppressed: int, total: int, duration_s: float, changes: str) -> dict:
        """A flood report's payload fields (the family's ``*.flood`` event adds what and where)."""
        return {"state": state, "suppressed": suppressed, "total": total, "duration_s": duration_s,
                "rate": self.rate, "burst": self.burst, "detail": self.describe(state, suppressed, total, changes)}

    def _raise(self, key: Hashable, value: Any) -> None:
        self._alarm(key, value)
        self._alarmed[key] = value  # after: an alarm that could not be stored is still owed

    def _reported(self, state: str, suppressed: int, total: int, duration_s: float) -> None:
        self._report(state, suppressed, total, duration_s)
        if state == "started":
            return
        for key, value in list(self.state.items()):  # the state the counted changes left
            if self._alarmed.get(key, _NEVER) != value:
                self._raise(key, value)
