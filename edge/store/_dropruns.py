"""Drop records folded into runs: one signed row per run of consecutive dropped seqs.

Rows removed out of chain order (the store making room) leave their hash in
``dropped`` so the audit walk can step over them. One row per dropped event grew
without bound while the broker was away: on an 8 MiB disk at 200 events/s those
records alone filled the disk in about a minute, and with it every commit failed.
A run of consecutive seqs dropped for the same reason needs only the hash of its
last event, so it is one row: ``seq`` its first seq, ``last`` its last, ``hash``
the last event's hash, signed over both ends. Single drops stay as before
(``last`` NULL), so stores written before this read the same.
"""

from __future__ import annotations

import sqlite3

from edge.store import _chain

SCHEMA = "ALTER TABLE dropped ADD COLUMN last INTEGER"  # migration v3


def record(conn: sqlite3.Connection, key: bytes, rows: list[tuple], reason: str, at: float) -> None:
    """Record removed ``rows`` ((seq, hash, type, priority, size), ascending seq) as runs,
    extending a run of the same reason that ends right before."""
    for run in _consecutive(rows):
        first, last = run[0][0], run[-1][0]
        seq, digest, type_, priority, _size = run[-1]
        before = conn.execute("SELECT seq, COALESCE(last, seq), reason FROM dropped WHERE seq < ? "
                              "ORDER BY seq DESC LIMIT 1", (first,)).fetchone()
        if before is not None and before[1] == first - 1 and before[2] == reason:
            first = before[0]
            conn.execute("DELETE FROM dropped WHERE seq = ?", (first,))
        tag_label, tag_seq = _chain.drop_label(reason, first, last)
        conn.execute("INSERT INTO dropped (seq, hash, type, priority, reason, at, mac, last) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (first, digest, type_, priority, reason, at, _chain.mac(key, tag_label, tag_seq, digest),
                      last if last != first else None))


def hash_ending_at(conn: sqlite3.Connection, seq: int) -> tuple | None:
    """(hash,) of the drop record whose last seq is ``seq``, if there is one."""
    row = conn.execute("SELECT COALESCE(last, seq), hash FROM dropped WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
                       (seq,)).fetchone()
    return (row[1],) if row is not None and row[0] == seq else None


def holes(conn: sqlite3.Connection, lo: int, hi: int) -> int:
    """How many seqs in [lo, hi] drop records cover."""
    try:
        return _holes(conn, lo, hi)
    except sqlite3.OperationalError:  # a store from before runs (not migrated yet): one row per seq
        return conn.execute("SELECT COUNT(*) FROM dropped WHERE seq BETWEEN ? AND ?", (lo, hi)).fetchone()[0]


def _holes(conn: sqlite3.Connection, lo: int, hi: int) -> int:
    return conn.execute("SELECT COALESCE(SUM(MIN(COALESCE(last, seq), ?) - MAX(seq, ?) + 1), 0) FROM dropped "
                        "WHERE seq <= ? AND COALESCE(last, seq) >= ?", (hi, lo, hi, lo)).fetchone()[0]


def _consecutive(rows: list[tuple]):
    run: list[tuple] = []
    for row in rows:
        if run and row[0] != run[-1][0] + 1:
            yield run
            run = []
        run.append(row)
    if run:
        yield run
