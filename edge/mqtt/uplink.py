"""The uplink: drains the store's outbox to the broker, in seq order, acked only on PUBACK.

``mqtt-uplink`` reads pending events after a cursor, packs them into batch
messages (one event family each; the stored canonical bytes are joined, never
re-serialised), and keeps up to ``mqtt.inflight`` messages unacknowledged. A
backlog of one family is read a message at a time, joined by SQLite, the next
read running ahead on its own thread (``_spans``); other events row by row
(``_batch.pack``). PUBACKs arrive on paho's thread as (mid, reason code) and
are queued; only a success code hands the batch's seqs (as ranges) to
``mqtt-acker``, which marks them acked through the store's single writer. A refusal (reason code >= 0x80) leaves the
events pending and pauses the uplink with jittered backoff; a reconnect
re-sends everything not acked (central de-duplicates by event id).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import structlog

from edge.config import Settings
from edge.errors import StoreClosed, StoreError
from edge.mqtt._batch import RESULT_FAMILY, Batch, pack
from edge.mqtt._spans import SpanReader
from edge.mqtt.backoff import full_jitter
from edge.mqtt.errors import MqttUnavailable
from edge.seqranges import SeqRanges, runs, union
from edge.supervisor import SupervisedThread

log = structlog.get_logger("edge.mqtt.uplink")

_SAFETY_WAKE_S = 5.0
_ACK_RETRY_S = 1.0  # acks the store could not record are retried this often
_SEQ_MAX = (1 << 63) - 1
_ACKS_PER_WAKE = 4  # PUBACKs that wake the uplink in a drain: a fast-path read's worth (_spans)


class Acker:
    """``mqtt-acker``: commits acknowledged seqs through the store's writer, many per commit."""

    def __init__(self, store, emit=None):
        self.store = store
        self._buf: list[tuple[int, int]] = []  # acknowledged (first, last) seq ranges
        self._buf_seqs: list[int] = []  # and single seqs (packed batches): made ranges on this thread
        self._writing: list[tuple[int, int]] = []  # taken from the buffers, being committed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._stop = False
        self.committed = 0
        self.last_acked_seq = 0
        # Acks the store could not record (full disk): kept, skipped by the uplink, retried.
        self.unrecorded = SeqRanges()
        self._failing = False
        self._thread = SupervisedThread(self._run, name="mqtt-acker", emit=emit)

    def start(self) -> None:
        self._thread.start()

    def add(self, ranges: list[tuple[int, int]], seqs: list[int] = ()) -> None:
        with self._lock:
            self._buf.extend(ranges)
            self._buf_seqs.extend(seqs)
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every seq handed in so far is committed."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._lock:
            while self._buf or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(remaining)
        return True

    def wait_committed(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` events are committed acked (woken by each commit)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.committed < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self._stop = True
        self._thread.stop()
        self._wake.set()
        self._thread.join(timeout)

    def uncommitted(self) -> list[tuple[int, int]]:
        """Every seq acknowledged by the broker and not yet committed acked: buffered, being
        written, or kept in memory. The store must never drop these as never sent."""
        with self._lock:
            return [*self._buf, *runs(sorted(set(self._buf_seqs))), *self._writing, *self.unrecorded.ranges()]

    def is_unrecorded(self, seq: int) -> bool:
        with self._lock:
            return seq in self.unrecorded

    def _run(self) -> None:
        while True:
            self._wake.wait(_ACK_RETRY_S if self.unrecorded else None)
            self._wake.clear()
            with self._lock:
                ranges, seqs, self._buf, self._buf_seqs = self._buf, self._buf_seqs, [], []
                retried = bool(self.unrecorded) and not self._stop  # retry what the store could not take;
                if retried:
                    ranges += self.unrecorded.ranges()  # they stay in the set (uplink, store) until written
                if seqs:
                    ranges += runs(sorted(set(seqs)))
                self._busy, self._writing = bool(ranges), ranges
            if ranges:
                self._commit(ranges, retried)
            with self._lock:
                self._busy, self._writing = False, []
                self._idle.notify_all()
                if self._stop and not self._buf and not self._buf_seqs:
                    return

    def _commit(self, ranges: list[tuple[int, int]], retried: bool = False) -> None:
        try:
            self.committed += self.store.mark_acked_ranges(ranges)
            if retried:
                with self._lock:
                    self.unrecorded.clear()  # only this thread adds to it: all of it is written now
            self.last_acked_seq = max(self.last_acked_seq, max(hi for _lo, hi in ranges))
        except StoreClosed:
            log.warning("uplink_acks_not_recorded_store_closed", count=_span(ranges))
        except StoreError as exc:
            # The broker has them; keep the acks in memory (the uplink skips those events)
            # and write them when the store takes writes again: no re-send storm.
            with self._lock:
                self.unrecorded.add_ranges(ranges)
                kept = self.unrecorded.count
            if not self._failing:  # once per episode: the retry runs every second
                self._failing = True
                log.error("uplink_ack_commit_failed", count=_span(ranges), kept_in_memory=kept, error=str(exc))
            return
        if self._failing:
            self._failing = False
            log.info("uplink_acks_recorded_again", count=_span(ranges))
        if self.unrecorded.forgotten:
            log.warning("uplink_acks_forgotten", count=self.unrecorded.forgotten)
            self.unrecorded.forgotten = 0


class Uplink:
    """Outbox -> broker. Owned by the MqttLink; runs whenever the link is connected."""

    def __init__(self, link, store, settings: Settings):
        self.link, self.store, self.cfg = link, store, settings.mqtt
        self.site, self.device = settings.site, settings.device_id
        emit = self.fault_emit = functools.partial(_emit_fault, store, settings)
        self.acker = Acker(store, emit)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._rewind = threading.Event()
        self._acks: deque = deque()
        self._gen = 0
        self._cursor = 0
        self._ready: deque[Batch] = deque()
        self._inflight: dict[int, Batch] = {}
        self._inflight_events = 0
        self._paused_until = 0.0
        self._reading: int | None = None  # the cursor + 1 while a read runs (see protected_ranges)
        # Seqs published before a rewind whose PUBACK never came: the broker may have them, so
        # the store must not call them never sent until they are read for sending again.
        self._maybe_delivered: list[tuple[int, int]] = []
        self._read_failures = 0
        self._refused_topics: dict[str, int] = {}  # topic -> consecutive refusals
        self.counters = {"sent_messages": 0, "sent_events": 0, "acked_messages": 0, "refused_messages": 0}
        self.last_refusal: dict | None = None
        self._thread = SupervisedThread(self._run_supervised, name="mqtt-uplink", emit=emit)
        self._runs = 0
        self._spans = None  # the fast path for a backlog (see _spans), where the store offers it
        if hasattr(store, "outbox_spans"):
            self._spans = SpanReader(store, self.cfg.batch_max_events, self._max_bytes, self.site, self.device)
        store.add_listener(self._on_append)
        if hasattr(store, "protected"):
            store.protected = self.protected_ranges
        link.add_connection_listener(self._on_connection)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self.acker.start()
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop sending; wait (bounded) for in-flight PUBACKs so their acks are recorded."""
        self._stopping.set()
        self._thread.stop()
        self._wake.set()
        self._thread.join(timeout)
        if self._spans is not None:
            self._spans.close()
        self.acker.stop(timeout)

    def status(self) -> dict[str, Any]:
        down = [t.name for t in (self._thread, self.acker._thread) if t.faults and not t.is_alive()]
        return {**({"status": "down", "down": down} if down else {}), **self.counters,
                "acks_kept_in_memory": self.acker.unrecorded.count,
                "inflight_messages": len(self._inflight),
                "inflight_events": self._inflight_events, "acked_events": self.acker.committed,
                "last_acked_seq": self.acker.last_acked_seq or None,
                "paused_s": round(max(0.0, self._paused_until - time.monotonic()), 3) or None,
                "last_refusal": self.last_refusal}

    def protected_ranges(self) -> list[tuple[int, int]]:
        """Seqs the store must not drop as never sent (called inside the store's commit):
        those whose acks are kept in memory (delivered), and from the first event in flight
        or read for sending up to the read cursor (they may be delivered any moment), and those
        acknowledged by the broker whose acks are not committed yet."""
        out = self.acker.uncommitted() + self._maybe_delivered
        if (reading := self._reading) is not None:  # rows being read now: none of them is held yet
            out.append((reading, _SEQ_MAX))
        for _attempt in range(3):  # the uplink thread may change these while we look
            try:
                firsts = [b.first for b in list(self._inflight.values())] + [b.first for b in list(self._ready)]
                break
            except RuntimeError:
                continue
        else:
            firsts = [0]  # could not look: keep everything up to the cursor
        if firsts:
            out.append((min(firsts), max(self._cursor, max(firsts))))
        if self._spans is not None:
            out += self._spans.protected()  # being read (ahead)
        return out

    # -- wake-ups from other threads (never block) --------------------------------

    def _on_append(self, events) -> None:
        self._wake.set()

    def _on_connection(self, connected: bool) -> None:
        self._rewind.set()
        self._wake.set()

    def _on_ack(self, gen: int, mid: int, code: int, reason: str) -> None:
        self._acks.append((gen, mid, code, reason))
        # A few PUBACKs per wake-up in a drain (a full window has room for a read's worth
        # then); at once when every message in flight has its PUBACK (live traffic).
        if len(self._acks) >= min(_ACKS_PER_WAKE, len(self._inflight)):
            self._wake.set()

    # -- the loop ------------------------------------------------------------------

    def _run_supervised(self) -> None:
        self._runs += 1
        if self._runs > 1:  # restarted after a fault: what was in flight is unknown, send it again
            self._rewind.set()
        self._run()

    def _run(self) -> None:
        while True:
            timeout = _SAFETY_WAKE_S
            if self._paused_until > time.monotonic():
                timeout = min(timeout, self._paused_until - time.monotonic())
            self._wake.wait(timeout)
            self._wake.clear()
            self._take_acks()
            if self._stopping.is_set():
                if not self._inflight or not self.link.connected:
                    return
                continue  # draining: only acks matter now
            if self._rewind.is_set():
                self._do_rewind()
            if self._paused_until:
                if time.monotonic() < self._paused_until or self._inflight:
                    continue
                self._paused_until = 0.0
                self._do_rewind()  # retry the refused events (and what followed them)
            if self.link.connected:
                self._fill()

    def _do_rewind(self) -> None:
        """Forget what is in flight and re-read every pending event from the store."""
        self._rewind.clear()
        self._gen += 1
        if self._inflight:  # published, no PUBACK: maybe delivered (as one range: gaps kept too, safe)
            ranges = [r for b in list(self._inflight.values()) for r in b.ranges]
            self._maybe_delivered = union(self._maybe_delivered + [(min(r[0] for r in ranges),
                                                                    max(r[1] for r in ranges))])
        self._inflight.clear()
        self._inflight_events = 0
        self._ready.clear()
        if self._spans is not None:
            self._spans.forget()
        self.acker.flush()  # acks already received are not sent again
        self._cursor = 0

    def _fill(self) -> None:
        window = self.cfg.inflight
        on_ack = functools.partial(self._on_ack, self._gen)
        while len(self._inflight) < window:
            if not self._ready and not self._read():
                return
            batch = self._ready[0]
            try:
                delivery = self.link.publish(batch.topic, batch.payload, qos=1, on_ack=on_ack)
            except MqttUnavailable:
                return  # the connection listener wakes us again
            self._inflight[delivery.mid] = batch  # in flight before it leaves the queue: always held
            self._ready.popleft()
            self._inflight_events += batch.count
            self.counters["sent_messages"] += 1
            self.counters["sent_events"] += batch.count

    def _read(self) -> bool:
        """Read and pack the next pending events; False when there are none (or reading failed)."""
        self._reading = self._cursor + 1
        try:
            got = None
            if self._spans is not None and not self.acker.unrecorded and self._spans.usable():
                got = self._spans.read(self._cursor)
            if got is None:
                read = self._read_rows()
            else:
                batches, self._cursor = got
                self._ready.extend(batches)
                read = bool(batches)
        except (sqlite3.Error, StoreError) as exc:
            # A busy or failing disk must not end the uplink: try again after a pause.
            self._read_failures += 1
            delay = full_jitter(min(self._read_failures, 8), self.cfg.backoff_min_s, self.cfg.backoff_max_s)
            self._paused_until = time.monotonic() + self.cfg.backoff_min_s + delay
            log.error("uplink_read_failed", error=str(exc), retry_in_s=round(delay, 3))
            return False
        finally:
            self._reading = None  # what was read is in the ready queue (or was not read)
        self._read_failures = 0
        self._settle_maybe_delivered()
        return read

    def _settle_maybe_delivered(self) -> None:
        """Forget a maybe-delivered range once read again and every batch holding its seqs is
        acked (the acker has them): not before, as another rewind would leave them unheld."""
        if self._maybe_delivered:
            held = [b.first for b in self._inflight.values()] + [b.first for b in self._ready]
            below = min(held, default=_SEQ_MAX)
            self._maybe_delivered = [r for r in self._maybe_delivered if r[1] > self._cursor or r[1] >= below]

    def _read_rows(self) -> bool:
        """Read pending events row by row and pack them per family; False when there are none."""
        limit = max(self.cfg.batch_max_events * 4, 1000)
        while True:
            rows = self.store.outbox_bodies(limit, after_seq=self._cursor)
            if not rows:
                return False
            self._cursor = rows[-1][0]
            if self.acker.unrecorded:  # acked by the broker, not yet recorded: not sent again
                rows = [row for row in rows if not self.acker.is_unrecorded(row[0])]
            if rows:
                break
        self._ready.extend(pack(rows, site=self.site, device=self.device, max_events=self.cfg.batch_max_events,
                                max_bytes=self._max_bytes(), store_id=getattr(self.store, "store_id", None)))
        return True

    def _max_bytes(self) -> int:
        return getattr(self.link, "batch_max_bytes", self.cfg.batch_max_bytes)

    def _take_acks(self) -> None:
        acked, seqs, done = [], [], {}
        while self._acks:
            gen, mid, code, reason = self._acks.popleft()
            if gen != self._gen:
                continue  # from before a rewind: those events are being sent again
            batch = self._inflight.get(mid)
            if batch is None or mid in done:
                continue
            if code < 0x80:
                done[mid] = batch  # leaves _inflight once the acker holds it (protected_ranges)
                self.counters["acked_messages"] += 1
                self._refused_topics.pop(batch.topic, None)
                if batch.span:
                    acked.append(batch.span)
                else:
                    seqs += batch.seqs
            else:
                del self._inflight[mid]
                self._inflight_events -= batch.count
                self._refused(batch, code, reason)
        if acked or seqs:
            self.acker.add(acked, seqs)  # one wake-up of the acker, not one per message
        for mid, batch in done.items():
            del self._inflight[mid]
            self._inflight_events -= batch.count
        if done:
            self._settle_maybe_delivered()

    def _refused(self, batch: Batch, code: int, reason: str) -> None:
        self.counters["refused_messages"] += 1
        attempt = self._refused_topics.get(batch.topic, 0)
        self._refused_topics[batch.topic] = attempt + 1
        delay = self.cfg.backoff_min_s + full_jitter(attempt, self.cfg.backoff_min_s, self.cfg.backoff_max_s)
        self._paused_until = max(self._paused_until, time.monotonic() + delay)
        self.last_refusal = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                             "topic": batch.topic, "code": f"0x{code:02x}", "reason": reason,
                             "events": batch.count, "first_seq": batch.first}
        log.warning("uplink_publish_refused", topic=batch.topic, code=f"0x{code:02x}", reason=reason,
                    events=batch.count, first_seq=batch.first, retry_in_s=round(delay, 3))


def _span(ranges: list[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def _emit_fault(store, settings: Settings, type: str, payload: dict, priority: str, source: str):
    """How the uplink's threads record a ``system.component_fault``: stored like any event."""
    from edge.events import make_event

    return store.append(make_event(device=settings.device_id, site=settings.site, type=type, source=source,
                                   payload=payload, priority=priority))


__all__ = ["RESULT_FAMILY", "Acker", "Batch", "Uplink", "pack"]  # Batch, pack: from _batch, used here and in tests
