"""Rate limits: a token bucket, and one report per flood instead of one record per refusal.

``TokenBucket`` caps a rate with a burst allowance: ``take`` waits for its turn (the
learning downloads' bandwidth), ``try_take`` answers at once (a reader's card reads).
``FloodReport`` turns the refusals a limit makes into a few events: one when a flood
starts, a count per ``window_s`` while it lasts, a total when it has been quiet for a
whole window. A flood that stops and starts again within a window is the same flood,
so however the refusals are spread there is at most one start per window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
