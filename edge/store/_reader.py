"""Read-only views of the store: outbox batches, stats, tail, audit.

Used by the daemon (on its own read connections) and by the CLI while the
daemon runs: WAL lets readers work beside the single writer.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from edge.sqlite import open_db
from edge.store import _acks, _dropruns
from edge.store._schema import PRIORITY_NAME

if TYPE_CHECKING:  # hashlib/hmac only when verifying: status and tail start faster
    from edge.store import _chain

DB_NAME = "events.db"
KEY_NAME = "audit.key"


# One message: count, seq bounds, how many are of another family than the first pending
# event read (see outbox_spans), the bodies joined with "," in seq order (a rowid range scan
# visits rows in seq order; NOT INDEXED keeps it one), the last one's hash. The bounds come
# from the pending index (two lookups), not from min(seq)/max(seq) over the scan, and the
# family is checked against known bounds, not by min(type)/max(type): fewer aggregate calls
# per row, about a fifth of the statement's cost. ?1 and ?2 bound the family's types.
_SPAN_SQL = (
    "SELECT n, lo, hi, others, body, (SELECT hash FROM events WHERE seq = hi) FROM ("
    "SELECT count(*) AS n, "
    "(SELECT min(seq) FROM events WHERE seq BETWEEN ?{a} AND ?{b} AND acked_at IS NULL) AS lo, "
    "(SELECT max(seq) FROM events WHERE seq BETWEEN ?{a} AND ?{b} AND acked_at IS NULL) AS hi, "
    "count(*) FILTER (WHERE type < ?1 OR type >= ?2) AS others, "
    "CAST(group_concat(body, ',') AS BLOB) AS body "
    "FROM events NOT INDEXED WHERE seq BETWEEN ?{a} AND ?{b} AND acked_at IS NULL)")


@functools.cache
def _spans_sql(count: int) -> str:
    return " UNION ALL ".join(_SPAN_SQL.format(a=2 * i + 3, b=2 * i + 4) for i in range(count))


class OutboxSpan(NamedTuple):
    count: int
    first: int
    last: int
    others: int  # events not of ``family``: while any, the span is no one message
    body: bytes  # the bodies joined with b","
    hash: bytes  # chain hash of ``last``
    family: str  # of the first pending event read (the first span's first)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    type: str
    priority: str
    body: bytes

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]


class StoreReader:
    """Queries over the store file; one connection per calling thread."""

    def __init__(self, state_dir: Path, *, readonly: bool = True):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_NAME
        self._readonly = readonly
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Writable ones are the daemon's readers: the store's writer set the file up (WAL).
            conn = open_db(self.path, readonly=self._readonly, wal=False)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def outbox_next(self, limit: int, after_seq: int = 0) -> list[OutboxRow]:
        """Up to ``limit`` pending events with seq > after_seq, in seq order."""
        rows = self._pending("seq, type, priority, body", limit, after_seq)
        return [OutboxRow(s, t, PRIORITY_NAME[p], b) for s, t, p, b in rows]

    def outbox_bodies(self, limit: int, after_seq: int = 0) -> list[tuple[int, str, bytes, bytes]]:
        """(seq, type, body, chain hash) of up to ``limit`` pending events after ``after_seq``, in seq order.

        The uplink's hot path: plain tuples, no per-row objects (draining a month
        of backlog reads hundreds of thousands of rows)."""
        return self._pending("seq, type, body, hash", limit, after_seq)

    def outbox_spans(self, limit: int, after_seq: int = 0, count: int = 1) -> list[OutboxSpan]:
        """Up to ``count`` consecutive spans of ``limit`` seqs each, from the first pending event
        after ``after_seq``: the pending events of each span as one joined body, in seq order.
        Empty when nothing is pending.

        The uplink's fast path for a backlog: SQLite joins the stored bytes itself
        (``b",".join`` of the bodies) in one statement for all the spans, with no Python
        object per row and the GIL released meanwhile, so the network thread keeps
        sending. The spans stop before the next unfolded ack range, so every pending row
        between a span's ``first`` and ``last`` is in it: acking that range acks exactly
        these events. Each span counts its events of another family than the first event
        read (``others``); the caller checks that (one family?) and the size."""
        conn = self._conn()
        ranges = _acks.load(conn)
        while True:
            span = _acks.next_span(conn, ranges, after_seq)
            if span is None:
                return []
            first, bound = span
            row = conn.execute("SELECT type FROM events WHERE seq = ?", (first,)).fetchone()
            family = row[0].split(".", 1)[0] if row else ""
            # Its types are those from "family." up to "family/" ("/" follows "." in ASCII).
            args = [family + ".", family + "/"]
            for lo in range(first, min(bound, first + count * limit - 1) + 1, limit):
                args += (lo, min(bound, lo + limit - 1))
            rows = conn.execute(_spans_sql(len(args) // 2 - 1), args).fetchall()
            spans = sorted((OutboxSpan(*row, family) for row in rows if row[0]), key=lambda sp: sp.first)
            if spans:
                return spans
            after_seq = args[-1]  # every row there went (evicted) since the first was found

    def _pending(self, columns: str, limit: int, after_seq: int) -> list[tuple]:
        """Rows with acked_at NULL that no unfolded ack range covers (see _acks).

        The pending index finds the first pending row; from there the table is read
        in rowid order up to the next ack range (pending rows are nearly contiguous:
        acked history is a prefix), which costs a third less than one index-to-row
        lookup per row."""
        conn = self._conn()
        sql = (f"SELECT {columns} FROM events NOT INDEXED "
               "WHERE seq BETWEEN ? AND ? AND acked_at IS NULL ORDER BY seq LIMIT ?")
        ranges = _acks.load(conn)
        out: list[tuple] = []
        while len(out) < limit:
            span = _acks.next_span(conn, ranges, after_seq)
            if span is None:
                break
            first, bound = span
            out += conn.execute(sql, (first, bound, limit - len(out))).fetchall()
            after_seq = bound  # read on after the range, if the rows before it did not fill
            if bound >= _acks.NO_BOUND:
                break
        return out

    def meta(self) -> dict:
        return dict(self._conn().execute("SELECT key, value FROM meta").fetchall())

    def stats(self) -> dict:
        conn = self._conn()
        conn.execute("BEGIN")  # one snapshot: counters and rows agree while the daemon writes
        try:
            meta = self.meta()
            oldest_seq = _acks.first_pending(conn, _acks.load(conn))
            oldest_ts = None
            if oldest_seq is not None:
                oldest_ts = conn.execute("SELECT ts FROM events WHERE seq = ?", (oldest_seq,)).fetchone()[0]
            stored, pending = _counts(conn, meta)
        finally:
            conn.execute("COMMIT")
        file_bytes = sum(p.stat().st_size for p in self.state_dir.glob(DB_NAME + "*")
                         if ".corrupt-" not in p.name)
        last_ack = meta.get("last_ack_at")
        return {
            "pending": pending,
            "oldest_pending_seq": oldest_seq,
            "oldest_pending_ts": oldest_ts,
            "oldest_pending_age_s": _age_s(oldest_ts),
            "stored": stored,
            "bytes_used": meta.get("used_bytes", 0),
            "file_bytes": file_bytes,
            "max_bytes": meta.get("max_bytes"),
            "cap_bytes": meta.get("cap_bytes", meta.get("max_bytes")),  # lower when the disk is short
            "acked_total": meta.get("acked_total", 0),
            "last_ack_at": last_ack,
            "last_ack_age_s": round(time.time() - last_ack, 3) if last_ack else None,
            "next_seq": meta.get("next_seq", 1),
            "full": bool(meta.get("full", 0)),
            "dropped": {p: meta.get(f"dropped_{p}", 0) for p in ("alarm", "normal", "telemetry")},
            "refused": meta.get("refused_total", 0),
            "purged_acked": meta.get("purged_acked", 0),
        }

    def tail(self, n: int = 20, *, type_glob: str | None = None, after_seq: int = 0) -> list[tuple]:
        """(seq, body, acked_at) of the newest n events (or all after ``after_seq``), oldest first."""
        where, args = ["seq > ?"], [after_seq]
        if type_glob:
            where.append("type GLOB ?")
            args.append(type_glob)
        sql = f"SELECT seq, body, acked_at FROM events WHERE {' AND '.join(where)} "
        if after_seq:
            rows = self._conn().execute(sql + "ORDER BY seq LIMIT ?", (*args, max(n, 1000))).fetchall()
        else:
            rows = self._conn().execute(sql + "ORDER BY seq DESC LIMIT ?", (*args, n)).fetchall()
            rows.reverse()
        ranges = _acks.load(self._conn())
        if ranges:  # acked by range, not folded yet: show the range's ack time
            rows = [(seq, body, acked_at if acked_at is not None else
                     (r[2] if (r := _acks.covering(ranges, seq)) else None)) for seq, body, acked_at in rows]
        return rows

    def check_heads(self, heads: list[tuple[int, bytes]]) -> dict:
        """Compare the local chain with heads central recorded from synced batches.

        A rewrite of history, even by someone holding the audit key (who can re-MAC
        the local chain), changes the hash at every later seq and cannot change what
        central already holds. A head whose seq is no longer stored (purged after a
        checkpoint) is counted as unverifiable, not as a match."""
        conn = self._conn()
        matched, unverifiable, mismatches = 0, 0, []
        for seq, want in heads:
            row = (conn.execute("SELECT hash FROM events WHERE seq = ?", (seq,)).fetchone()
                   or conn.execute("SELECT hash FROM dropped WHERE seq = ?", (seq,)).fetchone()
                   or conn.execute("SELECT hash FROM checkpoints WHERE seq = ?", (seq,)).fetchone())
            if row is None:
                unverifiable += 1
            elif row[0] == want:
                matched += 1
            else:
                mismatches.append({"seq": seq, "central": want.hex(), "local": bytes(row[0]).hex()})
        return {"checked": len(heads), "matched": matched, "unverifiable": unverifiable,
                "mismatches": mismatches}

    def verify(self, progress=None) -> _chain.VerifyReport:
        from edge import secrets
        from edge.store import _chain

        key = secrets.read(self.state_dir, KEY_NAME, legacy=self.state_dir / KEY_NAME)
        conn = self._conn()
        conn.execute("BEGIN")  # one consistent snapshot while the daemon keeps writing
        try:
            return _chain.verify(conn, key, progress)
        finally:
            conn.execute("COMMIT")


def _counts(conn: sqlite3.Connection, meta: dict) -> tuple[int, int]:
    """(stored, pending) rows without COUNT(*): on a full 256 MB store a count scans
    hundreds of thousands of rows, longer than `edge status` may take.

    Every seq between the oldest and the newest stored row is either stored or recorded
    in ``dropped`` (evictions); the acked rows still stored are the acks minus what
    retention and eviction removed (``purged_acked``). Both counters are written in the
    same transaction as the rows they count.
    """
    lo = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
    if lo is None:
        return 0, 0
    hi = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    holes = _dropruns.holes(conn, lo, hi)
    if absent := meta.get("absent_ranges"):  # seqs lost to corruption or skipped after it (_salvage)
        import json

        holes += sum(max(0, min(hi, b) - max(lo, a) + 1) for a, b in json.loads(absent))
    stored = hi - lo + 1 - holes
    acked = meta.get("acked_total", 0) - meta.get("purged_acked", 0)
    return stored, min(stored, max(0, stored - acked))


def _age_s(iso_ts: str | None) -> float | None:
    if not iso_ts:
        return None
    from datetime import datetime

    return round(time.time() - datetime.fromisoformat(iso_ts).timestamp(), 3)
