"""The uplink's fast path for a backlog: whole messages from SQLite, the next ones read ahead.

While the pending events ahead are of one family, each message is one span of
seqs read in one statement (``StoreReader.outbox_spans``): SQLite joins the
stored bytes, with no Python object per row. After a full read, the next one
runs on its own thread (``mqtt-read-ahead``) while the uplink publishes: reading
and publishing, the two halves of a drain, overlap (the scan runs without the
GIL). With several families ahead the uplink reads rows and packs them
instead, and this path rests, longer each time it misses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from edge.mqtt._batch import Batch, envelope_head, tail, topic_for

if TYPE_CHECKING:  # concurrent.futures only once a backlog is read ahead: not on an idle tablet
    from concurrent.futures import Future, ThreadPoolExecutor

SPANS_PER_READ = 4  # messages per statement


class SpanReader:
    """Reads for the ``mqtt-uplink`` thread; ``protected()`` is also called by the store's writer."""

    def __init__(self, store, max_events: int, max_bytes: Callable[[], int], site: str, device: str):
        self.store, self.max_events, self.max_bytes = store, max_events, max_bytes
        self.site, self.device = site, device
        self.limit = max_events  # seqs per span: fewer when the events are too big for the byte cap
        self._misses = self._rest = 0
        self._lock = threading.Lock()
        self._ahead: tuple[Future, int, int] | None = None  # (reading, after_seq, limit)
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def usable(self) -> bool:
        """False while resting after a miss (mixed families ahead)."""
        self._rest -= 1
        return self._rest < 0

    def read(self, cursor: int) -> tuple[list[Batch], int] | None:
        """(batches, new cursor) for the pending events after ``cursor`` (no batch: none pending),
        or None when the next ones are not of one family: read them row by row."""
        max_bytes, limit = self.max_bytes(), self.limit
        head = envelope_head(getattr(self.store, "store_id", None))
        spans = self._take_ahead(cursor, limit)
        while True:
            if spans is None:
                spans = self.store.outbox_spans(limit, after_seq=cursor, count=SPANS_PER_READ)
            out, stop = [], None
            for span in spans:
                # Events of another family than the first one read: mixed from here (a later
                # span all of another family comes first in the next read instead).
                if span.others:
                    stop = "mixed"
                    break
                family = span.family
                payload = b"".join((head, span.body, tail(span.last, span.hash)))  # one copy, not two
                # Bytes per seq of this span size the next ones to the byte cap.
                per_seq = (len(span.body) + 1) / (span.last - span.first + 1)
                fits = max(1, int((max_bytes - len(payload) + len(span.body)) / per_seq))
                self.limit = min(self.max_events, fits)
                if len(payload) > max_bytes and span.count > 1:
                    stop, limit = "big", min(limit - 1, fits)
                    break
                out.append(Batch(topic_for(self.site, self.device, family), payload,
                                 span=(span.first, span.last), count=span.count))
                cursor = span.last
            if out:
                if stop is None:
                    self._misses = 0
                    if len(spans) == SPANS_PER_READ:  # a backlog: read on while these are sent
                        self._start_ahead(cursor, self.limit)
                return out, cursor
            if stop == "mixed":
                self._misses += 1
                self._rest = 1 << min(self._misses, 6)
                return None
            if stop is None:
                return [], cursor
            spans = None  # too big: again, fewer

    def protected(self) -> list[tuple[int, int]]:
        """Seqs the store must not drop as never sent: those the read ahead may return (from
        before it starts). The uplink holds those of a read it runs itself (``_reading``)."""
        if (ahead := self._ahead) is None:
            return []
        _reading, after, limit = ahead
        return [(after + 1, after + SPANS_PER_READ * limit)]

    def forget(self) -> None:
        """Drop the read ahead (a rewind): its result is not used."""
        with self._lock:
            self._ahead = None

    def close(self) -> None:
        self._closed = True  # a read still running on the uplink thread starts nothing new
        self.forget()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _start_ahead(self, cursor: int, limit: int) -> None:
        if self._closed:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-read-ahead")
        with self._lock:  # protected before the read starts, then the read
            self._ahead = (None, cursor, limit)
            reading = self._pool.submit(self.store.outbox_spans, limit, after_seq=cursor, count=SPANS_PER_READ)
            self._ahead = (reading, cursor, limit)

    def _take_ahead(self, cursor: int, limit: int):
        with self._lock:
            ahead = self._ahead
        if ahead is None:
            return None
        reading, after, read_limit = ahead
        try:
            spans = reading.result() if (after, read_limit) == (cursor, limit) else None  # errors raise here
        finally:
            with self._lock:
                if self._ahead is ahead:
                    self._ahead = None
        # Nothing (events may have come since: read now), or past what protected() covered.
        if not spans or spans[-1].last > after + SPANS_PER_READ * limit:
            return None
        return spans
