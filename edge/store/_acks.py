"""Acknowledgements recorded as seq ranges, folded into ``acked_at`` later.

Marking an event acked is an UPDATE of its row: the whole ~450-byte record is
rewritten and its entry leaves the ``events_pending`` index. For a device
draining a month of backlog that is most of the work (measured: 2-3x the cost
of reading and publishing the same events). Acks arrive almost entirely in
seq order, so a large ack is recorded instead as a few rows of
``acked_ranges(lo, hi, at)`` — cheap, durable in the same commit — and folded
into ``acked_at`` by maintenance in bounded chunks. Small acks (live traffic)
still update the rows at once.

Until a range is folded, readers treat its rows as acked: the outbox skips
them, ``stats`` does not count them as pending, ``tail`` shows the range's ack
time. Code that reads ``acked_at`` directly sees them as pending a little
longer, which errs on the safe side (nothing is purged or reported delivered
early).
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Iterable

DEFER_MIN_ROWS = 2000  # acks spanning fewer rows than this update acked_at at once
FOLD_BUDGET_ROWS = 20_000  # rows folded per maintenance run: bounds the writer's pause

SCHEMA = "CREATE TABLE acked_ranges (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, at REAL NOT NULL)"


def load(conn: sqlite3.Connection) -> list[tuple[int, int, float]]:
    """Unfolded ranges, sorted by ``lo`` (they never overlap). Empty on a store without the table."""
    try:
        return conn.execute("SELECT lo, hi, at FROM acked_ranges ORDER BY lo").fetchall()
    except sqlite3.OperationalError:  # a store file from before the table existed
        return []


def covering(ranges: list[tuple[int, int, float]], seq: int) -> tuple[int, int, float] | None:
    """The range containing ``seq``, if any."""
    i = bisect.bisect_right(ranges, (seq, float("inf"))) - 1
    if i >= 0 and ranges[i][0] <= seq <= ranges[i][1]:
        return ranges[i]
    return None


def uncovered(ranges: list[tuple[int, int, float]], lo: int, hi: int) -> Iterable[tuple[int, int]]:
    """The parts of [lo, hi] no range covers."""
    i = max(0, bisect.bisect_right(ranges, (lo, float("inf"))) - 1)
    while lo <= hi and i < len(ranges):
        r_lo, r_hi, _ = ranges[i]
        if r_hi < lo:
            i += 1
            continue
        if r_lo > hi:
            break
        if r_lo > lo:
            yield lo, r_lo - 1
        lo = max(lo, r_hi + 1)
        i += 1
    if lo <= hi:
        yield lo, hi


NO_BOUND = (1 << 63) - 1  # SQLite's largest integer: no ack range after a span


def next_span(conn: sqlite3.Connection, ranges, after: int = 0) -> tuple[int, int] | None:
    """(first, bound): the lowest seq > after that is pending and no range covers, and the
    last seq before the next range (``NO_BOUND`` when none follows). Pending rows between
    the two need no further range check."""
    first = first_pending(conn, ranges, after)
    if first is None:
        return None
    i = bisect.bisect_right(ranges, (first, float("inf")))
    return first, (ranges[i][0] - 1 if i < len(ranges) else NO_BOUND)


def count_pending(conn: sqlite3.Connection, lo: int, hi: int) -> int:
    return conn.execute("SELECT COUNT(*) FROM events INDEXED BY events_pending "
                        "WHERE acked_at IS NULL AND seq BETWEEN ? AND ?", (lo, hi)).fetchone()[0]


def first_pending(conn: sqlite3.Connection, ranges, after: int = 0) -> int | None:
    """Lowest seq > after that is pending and not covered by a range."""
    while True:
        row = conn.execute("SELECT MIN(seq) FROM events INDEXED BY events_pending "
                           "WHERE acked_at IS NULL AND seq > ?", (after,)).fetchone()
        seq = row[0]
        if seq is None:
            return None
        r = covering(ranges, seq)
        if r is None:
            return seq
        after = r[1]


class AckRanges:
    """The writer's side: record, look up and fold ranges (writer thread only)."""

    def __init__(self, conn: sqlite3.Connection):
        self._w = conn
        self.ranges = load(conn)

    def ack(self, seq_ranges: list[tuple[int, int]], now: float) -> int:
        """Record acks; returns how many pending events became acked."""
        parts = [p for lo, hi in seq_ranges for p in uncovered(self.ranges, lo, hi)]
        if sum(hi - lo + 1 for lo, hi in parts) < DEFER_MIN_ROWS:
            return sum(self._w.execute(
                "UPDATE events SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
                (now, lo, hi)).rowcount for lo, hi in parts)
        changed = 0
        for lo, hi in parts:
            n = count_pending(self._w, lo, hi)
            if n:
                changed += n
                self._w.execute("INSERT INTO acked_ranges VALUES (?, ?, ?)", (lo, hi, now))
                bisect.insort(self.ranges, (lo, hi, now))
        return changed

    def fold(self, budget: int | None = FOLD_BUDGET_ROWS) -> int:
        """Write range acks into ``acked_at``, oldest first, about ``budget`` seqs (None: all)."""
        done = 0
        while self.ranges and (budget is None or done < budget):
            lo, hi, at = self.ranges[0]
            upto = hi if budget is None else min(hi, lo + (budget - done) - 1)
            self._w.execute("UPDATE events SET acked_at = ? WHERE seq BETWEEN ? AND ? AND acked_at IS NULL",
                            (at, lo, upto))
            self._w.execute("DELETE FROM acked_ranges WHERE lo = ?", (lo,))
            self.ranges.pop(0)
            if upto < hi:
                self._w.execute("INSERT INTO acked_ranges VALUES (?, ?, ?)", (upto + 1, hi, at))
                self.ranges.insert(0, (upto + 1, hi, at))
            done += upto - lo + 1
        return done

    def reload(self) -> None:
        """After a rolled-back transaction: memory follows the file again."""
        self.ranges = load(self._w)
