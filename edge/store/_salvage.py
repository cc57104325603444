"""Salvage after corruption: every readable row of the moved-aside store comes back.

A damaged page costs the rows on it, not the whole file: the issue saw 2 002
pending events lost to a corruption that touched 11 of them. The moved-aside file
is read through the ``sqlite3`` module by seq range; a range that raises is split
in two until the unreadable seqs are isolated, so everything around a bad page is
read. Rows come back with their ids, seqs, hashes and ack state (folding in the old
``acked_ranges``); what was pending is sent again by the uplink as usual. Every row
is checked (its body is the JSON of that seq and id) before it is trusted.

Salvaged rows sit below the fresh store's first checkpoint, so the new audit chain
starts clean; the seqs between them that the new store will never hold are written
to ``meta.absent_ranges`` so its counts stay right.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import structlog

from edge.seqranges import merge
from edge.sqlite import open_db

log = structlog.get_logger("edge.store")

_COLUMNS = "seq, id, type, priority, ts, body, hash, acked_at"
_SMALL = 64  # below this many seqs, an unreadable range is read seq by seq
_CHUNK = 5000  # rows per read while nothing fails


def read_rows(path: Path, seq_hi: int) -> tuple[list[tuple], list[tuple[int, int]]]:
    """(readable rows, unreadable seq ranges) of the damaged store at ``path``."""
    conn = _open(path)
    if conn is None:  # not even the schema is readable: nothing to salvage, no seq known
        return [], []
    try:
        lo, hi = _bounds(conn, seq_hi)
        rows: list[tuple] = []
        lost: list[tuple[int, int]] = []
        start = lo
        while start <= hi:  # in chunks: one bad page must not cost a re-read of everything
            end = min(hi, start + _CHUNK - 1)
            _read(conn, start, end, rows, lost)
            start = end + 1
        acked = _acked_ranges(conn)
    finally:
        conn.close()
    if acked:
        rows = [_with_ack(row, acked) for row in rows]
    return rows, [tuple(r) for r in merge((), [s for lo, hi in lost for s in range(lo, hi + 1)])]


def _open(path: Path) -> sqlite3.Connection | None:
    for immutable in (False, True):  # immutable: no WAL
        try:
            conn = open_db(path, readonly=True, immutable=immutable)
            conn.execute("SELECT 1 FROM events LIMIT 1").fetchall()
            return conn
        except sqlite3.DatabaseError:
            continue
    return None


def _open_check(path: Path) -> bool:
    conn = _open(path)
    if conn is None:
        return False
    conn.close()
    return True


def _bounds(conn: sqlite3.Connection, seq_hi: int) -> tuple[int, int]:
    try:
        lo, hi = conn.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
    except sqlite3.DatabaseError:
        lo, hi = None, None
    try:
        head = conn.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()
        hi = max(hi or 0, head[0] if head and isinstance(head[0], int) else 0)
    except sqlite3.DatabaseError:
        pass
    return (lo or 1), min(hi or seq_hi, seq_hi) if hi else seq_hi


def _read(conn: sqlite3.Connection, lo: int, hi: int, rows: list, lost: list) -> None:
    try:
        got = conn.execute(f"SELECT {_COLUMNS} FROM events NOT INDEXED WHERE seq BETWEEN ? AND ? "
                           "ORDER BY seq", (lo, hi)).fetchall()
    except sqlite3.DatabaseError:
        if hi - lo < _SMALL:
            for seq in range(lo, hi + 1):
                _read_one(conn, seq, rows, lost)
            return
        mid = (lo + hi) // 2
        _read(conn, lo, mid, rows, lost)
        _read(conn, mid + 1, hi, rows, lost)
        return
    for row in got:
        if _sound(row):
            rows.append(row)
        else:
            lost.append((row[0], row[0]) if isinstance(row[0], int) else (lo, hi))


def _read_one(conn: sqlite3.Connection, seq: int, rows: list, lost: list) -> None:
    try:
        row = conn.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
    except sqlite3.DatabaseError:
        lost.append((seq, seq))
        return
    if row is not None:
        (rows if _sound(row) else lost).append(row if _sound(row) else (seq, seq))


def _sound(row: tuple) -> bool:
    """A row read from a damaged file is used only if it is what it claims to be."""
    seq, event_id, type_, priority, ts, body, digest, acked_at = row
    if not (isinstance(seq, int) and isinstance(body, bytes) and isinstance(digest, bytes)
            and isinstance(event_id, str) and isinstance(type_, str) and priority in (0, 1, 2)):
        return False
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return doc.get("seq") == seq and doc.get("id") == event_id and doc.get("type") == type_


def _acked_ranges(conn: sqlite3.Connection) -> list[tuple[int, int, float]]:
    try:
        return conn.execute("SELECT lo, hi, at FROM acked_ranges ORDER BY lo").fetchall()
    except sqlite3.DatabaseError:
        return []  # unreadable: those events are sent again (duplicates, never loss)


def _with_ack(row: tuple, acked: list[tuple[int, int, float]]) -> tuple:
    if row[7] is not None:
        return row
    for lo, hi, at in acked:
        if lo <= row[0] <= hi:
            return (*row[:7], at)
    return row


def salvage_into(conn: sqlite3.Connection, moved: Path, start_seq: int, row_overhead: int) -> dict:
    """Copy the readable rows of ``moved`` into the store open on ``conn`` (in one
    transaction) below ``start_seq``; returns what the system.store_recovered alarm says."""
    if _open_check(moved) is False:
        log.error("store_salvage_impossible", from_file=moved.name)
        return {"salvaged_rows": 0, "salvaged_pending": 0, "salvaged_pending_seqs": [], "lost_seqs": [],
                "salvage": "the moved-aside file cannot be read at all; its pending events are lost",
                "_bytes": 0, "_acked": 0}
    rows, lost = read_rows(moved, start_seq - 1)
    rows = [r for r in rows if r[0] < start_seq]
    pending = [r[0] for r in rows if r[7] is None]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(f"INSERT OR IGNORE INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        held = merge((), [r[0] for r in rows])
        if held:  # seqs from the oldest salvaged row up to the new start that will never be stored
            absent = _gaps(held, held[0][0], start_seq - 1)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('absent_ranges', ?)", (json.dumps(absent),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    report = {"salvaged_rows": len(rows), "salvaged_pending": len(pending),
              "salvaged_pending_seqs": [list(r) for r in merge((), pending)],
              "lost_seqs": [list(r) for r in lost]}
    log.warning("store_salvaged", from_file=moved.name, rows=len(rows), pending=len(pending),
                lost_ranges=len(lost), lost_seqs=sum(hi - lo + 1 for lo, hi in lost))
    report["_bytes"] = sum(row_overhead + len(r[5]) for r in rows)
    report["_acked"] = len(rows) - len(pending)
    return report


def _gaps(held: tuple, lo: int, hi: int) -> list[list[int]]:
    out, at = [], lo
    for r_lo, r_hi in held:
        if r_lo > at:
            out.append([at, r_lo - 1])
        at = max(at, r_hi + 1)
    if at <= hi:
        out.append([at, hi])
    return out


def salvage_store(store, state_dir: Path, recovered: dict) -> None:
    """At start-up (before the writer runs): salvage the file ``recover`` moved aside into
    ``store`` and add what was found to the ``recovered`` report."""
    moved = [state_dir / n for n in recovered.get("moved_to", []) if not n.endswith(("-wal", "-shm"))]
    if not moved or not moved[-1].exists():
        return
    # Below the fresh store's first row: after a crash mid-recovery, it may already hold some.
    first_new = store._w.execute("SELECT MIN(seq) FROM events").fetchone()[0] or store._next_seq
    report = salvage_into(store._w, moved[-1], first_new, store.ROW_OVERHEAD)
    store._used += report.pop("_bytes")
    store._counters["acked_total"] += report.pop("_acked")
    recovered.update(report)
    store._meta_written = {}  # every counter is written with the first batch
