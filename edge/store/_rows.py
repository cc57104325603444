"""Events into rows: the store's hot path (a mixin of ``Store``, inside a commit only).

Each event arrives serialised (``edge.events.wire``, made once, in make_event) with
a hole for its seq. Here the seq is spliced in and the row chained and queued; the
rows of a batch go to SQLite in a few multi-row statements, and the events get their
seq in place once the batch is committed (``Store._attempt``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

from edge.errors import StoreFull
from edge.events import Event, wire
from edge.store._schema import PRIORITY_NAME

# Bytes per row beyond the body: hash, id, type, ts, b-tree cell and index entries. Measured:
# 20 000 turnstile passages with 283-byte bodies take 467 bytes a row in the file.
ROW_OVERHEAD = 190
_ALARM, _NORMAL = 0, 1
_COLS = 7  # seq, id, type, priority, ts, body, hash
_MAX_ROWS_PER_STATEMENT = 128  # 896 parameters: under SQLite's oldest limit (999)
_sha256 = hashlib.sha256  # the audit chain's hash (_chain.chain_hash), inline on the hot path


class RowsMixin:
    def _run_jobs(self, jobs: list) -> None:
        """Run a batch's jobs in order, setting each one's result or StoreFull. A run of
        insert jobs that all fit is chained in one pass (16 producers make 16 one-event
        jobs); otherwise, and for any other job, one at a time."""
        i, n = 0, len(jobs)
        while i < n:
            if jobs[i].items is None:
                job, i = jobs[i], i + 1
                job.result, job.error = None, None
                self._flush_rows()
                try:
                    job.result = job.fn()
                except StoreFull as exc:
                    job.error = exc
                continue
            j = i + 1
            while j < n and jobs[j].items is not None:
                j += 1
            run, i = jobs[i:j], j
            if len(run) > 1 and self._insert_run(run):
                continue
            for job in run:
                job.result, job.error = None, None
                try:
                    job.result = self._insert(job.items)
                except StoreFull as exc:
                    job.error = exc

    def _insert_run(self, jobs: list) -> bool:
        """Every job's events chained in one pass; False, and nothing done, unless all fit
        (a full store decides job by job, by priority)."""
        if self._full:
            return False
        start = len(self._pending_rows)
        need, head = self._add_rows([event for job in jobs for event in job.items])
        if self._used + need > self._cap:
            del self._pending_rows[start:]
            return False
        seq, unsequenced = self._next_seq, self._unsequenced
        for job in jobs:
            job.result, job.error = job.items, None
            unsequenced.append((seq, job.items))
            seq += len(job.items)
        self._next_seq, self._prev_hash, self._used = seq, head, self._used + need
        return True

    def _insert(self, events: list[Event]) -> list[Event]:
        start = len(self._pending_rows)
        need, head = self._add_rows(events)
        if self._used + need <= self._cap:
            if self._full and min(e._wire[2] for e in events) != _ALARM:
                self._full = False
            return self._took(events, need, head)  # the hot path: room to spare
        del self._pending_rows[start:]  # room is made first, and may take seqs for a report
        self._flush_rows()  # eviction queries must see every row of this batch
        top = min(e._wire[2] for e in events)
        if not self._make_room(need, top):
            self._counters["refused_total"] += len(events)
            if self._disk.limited:
                self._pressure.note("refused", PRIORITY_NAME[top], len(events), self._dropped_now())
            self._enter_full(top, refused=True)
            raise StoreFull(f"store is full ({self._used} of {self._cap} bytes, "
                            f"only higher-priority events remain); {PRIORITY_NAME[top]} events "
                            "are refused until the uplink drains it")
        if top == _ALARM and self._used + need > self._cap:
            self._enter_full(_NORMAL, refused=False)  # nothing left to evict: alarms go past the cap
        elif top >= self._full_prio:
            self._full = False
        return self._took(events, *self._add_rows(events))

    def _write_rows(self, events: list[Event]) -> list[Event]:
        for event in events:
            wire(event)
        return self._took(events, *self._add_rows(events))

    def _add_rows(self, events: list[Event]) -> tuple[int, bytes]:
        """Queue the rows of ``events`` for the next seqs, chained; returns the bytes they
        count against the cap and the new chain head. Nothing is taken until ``_took``."""
        seq, prev, rows, size = self._next_seq, self._prev_hash, self._pending_rows, 0
        for event in events:
            event_id, type_, priority, ts, head, tail = event._wire
            body = b"%b%d%b" % (head, seq, tail)
            prev = _sha256(prev + body).digest()
            rows += (seq, event_id, type_, priority, ts, body, prev)
            size += len(body)
            seq += 1
        return size + ROW_OVERHEAD * len(events), prev

    def _took(self, events: list[Event], need: int, head: bytes) -> list[Event]:
        self._unsequenced.append((self._next_seq, events))
        self._next_seq += len(events)
        self._prev_hash, self._used = head, self._used + need
        return events

    def _flush_rows(self) -> None:
        """Insert the batch's rows with few statements: SQLite releases the GIL around every
        statement, and getting it back can cost a whole switch interval when another thread
        is busy, so a batch of 16 rows is one statement here, not 16."""
        flat, self._pending_rows = self._pending_rows, []
        n, start = len(flat) // _COLS, 0
        for chunk in _chunks(n):
            self._w.execute(_insert_sql(chunk), flat[start * _COLS:(start + chunk) * _COLS])
            start += chunk


def _chunks(rows: int) -> Iterable[int]:
    """Split a batch into power-of-two statements so a handful of SQL texts are ever prepared."""
    while rows:
        chunk = min(_MAX_ROWS_PER_STATEMENT, 1 << (rows.bit_length() - 1))
        yield chunk
        rows -= chunk


@functools.cache
def _insert_sql(rows: int) -> str:
    return ("INSERT INTO events (seq, id, type, priority, ts, body, hash) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * rows))
