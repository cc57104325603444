"""Wrong PINs per card holder at this gate: after ``max_wrong_pins`` in a row the card is locked out.

A stolen card must not let its finder walk through the PIN space. Every wrong
PIN a reader reports (``check_pin`` said no) counts against the directory
holder, across every lane and reader of this gate; a correct PIN resets the
count. At ``max_wrong_pins`` in a row the holder's card is locked out for
``pin_lockout_s``: a presented card of that holder is then denied at once
(``pin_locked``) and no PIN is asked for, so no further guess is tested. The
count is not reset when a lockout ends: the next wrong PIN locks the card again
at once (one guess per lockout), until a correct PIN or a two-person
``clear_pin_lockout`` resets it.

The count and the lockout's end are kept in ``gate.db`` (services.gate.state)
before the decision is recorded, so a restart lifts nothing. The end is a
moment by two clocks (edge.uptime): the daemon's trusted time and the device's
persisted uptime; the lockout ends only when both have passed it, so a clock
pushed forward lifts nothing early. Read back at start, an end is bounded to
``pin_lockout_s`` from then by either clock (a lost uptime holds no card for
ever). Only one PIN check per holder runs at a time: a cloned card at a second
lane cannot test guesses in parallel past the limit.

Runs on the engine thread; ``summary`` may be called from the daemon's status
thread, hence the lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from edge.errors import StoreError
from edge.uptime import Clocks, Moment
from services.gate.state import GateState

log = structlog.get_logger("edge.gate")
_MAX_COUNT = 1_000_000  # a count is kept, not grown without end


@dataclass(frozen=True)
class Lockout:
    """A lockout that has just begun."""

    holder: str
    wrong: int
    until: Moment
    lockout_s: float

    def until_iso(self) -> str:
        return datetime.fromtimestamp(self.until.wall, UTC).isoformat()


class PinLockouts:
    def __init__(self, state: GateState, clocks: Clocks, max_wrong: int, lockout_s: float):
        self._state, self._clocks = state, clocks
        self.max_wrong, self.lockout_s = max_wrong, lockout_s
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, Moment | None]] = {}
        self._checking: dict[str, str] = {}  # holder -> approach whose PIN check is in flight
        for holder, wrong, wall, up in state.pin_counts():
            until = None
            if wall is not None and up is not None:
                until = clocks.within(Moment(wall, up), lockout_s)
            self._counts[holder] = (wrong, until)

    def wrong_count(self, holder: str) -> int:
        with self._lock:
            return self._counts.get(holder, (0, None))[0]

    def remaining(self, holder: str) -> float:
        """Seconds the holder's card stays locked out here (0: it is not), by both clocks."""
        with self._lock:
            until = self._counts.get(holder, (0, None))[1]
        if until is None:
            return 0.0
        now = self._clocks.moment()
        return until.remaining(now.wall, now.up)

    # -- one PIN check per holder at a time ------------------------------------------------------

    def begin_check(self, holder: str, approach_id: str) -> bool:
        """Take the holder's one PIN-check slot for this approach; False if another holds it."""
        return self._checking.setdefault(holder, approach_id) == approach_id

    def end_check(self, holder: str, approach_id: str) -> None:
        if self._checking.get(holder) == approach_id:
            del self._checking[holder]

    # -- results ---------------------------------------------------------------------------------

    def wrong(self, holder: str) -> Lockout | None:
        """Count one wrong PIN; the lockout when this one started it. Kept on disk before it returns;
        if the disk refuses, the count still holds in memory (until a restart) and it is logged."""
        with self._lock:
            wrong, until = self._counts.get(holder, (0, None))
            wrong = min(wrong + 1, _MAX_COUNT)
            lockout = None
            if wrong >= self.max_wrong:
                until = self._clocks.moment().plus(self.lockout_s)
                lockout = Lockout(holder, wrong, until, self.lockout_s)
            self._counts[holder] = (wrong, until)
        try:
            self._state.set_pin_count(holder, wrong, until.wall if until else None, until.up if until else None)
        except StoreError as exc:
            log.error("gate_pin_count_not_kept", holder=holder, wrong=wrong, error=str(exc)[:300])
        return lockout

    def right(self, holder: str) -> None:
        """A correct PIN: the count starts again (if the disk refuses, a restart brings the old count
        back: the safe side)."""
        try:
            self.clear(holder)
        except StoreError as exc:
            log.error("gate_pin_count_not_reset", holder=holder, error=str(exc)[:300])

    def clear(self, holder: str) -> tuple[int, float] | None:
        """Forget the holder's count and lockout; (wrong PINs, seconds of lockout left) it had.
        On disk first: a StoreError leaves the lockout in force."""
        left = self.remaining(holder)
        with self._lock:
            entry = self._counts.get(holder)
        if entry is None:
            return None
        self._state.forget_pin_count(holder)
        with self._lock:
            self._counts.pop(holder, None)
        return entry[0], left

    def summary(self) -> list[dict[str, object]]:
        """The holders locked out now: wrong PINs, seconds left (both clocks) and the time that
        makes by the trusted clock (``until``, UTC)."""
        with self._lock:
            ends = {h: (w, until) for h, (w, until) in self._counts.items() if until is not None}
        now = self._clocks.moment()
        out = []
        for h, (wrong, until) in sorted(ends.items()):
            left = until.remaining(now.wall, now.up)
            if left > 0:
                out.append({"holder": h, "wrong_pins": wrong, "remaining_s": round(left, 1),
                            "until": datetime.fromtimestamp(now.wall + left, UTC).isoformat(timespec="seconds")})
        return out

    def status(self) -> dict[str, object]:
        """The gate component's share of `edge status`: ``pin_lockouts``, and a ``note`` when any."""
        lockouts = self.summary()
        note = lockouts_note(lockouts)
        with self._lock:  # wrong PINs counted, locked out or not: what clear_pin_lockout may clear
            counts = {h: w for h, (w, _until) in sorted(self._counts.items()) if w}
        return {"pin_lockouts": lockouts, "wrong_pin_counts": counts, **({"note": note} if note else {})}


def lockouts_note(lockouts: list[dict[str, object]]) -> str | None:
    """`edge status`: the cards locked out, until when, and how two people end one early."""
    if not lockouts:
        return None
    cards = ", ".join(f"{x['holder']} until {str(x['until'])[11:19]} UTC" for x in lockouts)
    return (f"PIN-LOCKED cards: {cards}. To end one early: edge gate clear-pin-lockout HOLDER --reason TEXT, "
            f"then a second operator runs edge cmd approve ID (`edge gate status` for details)")
