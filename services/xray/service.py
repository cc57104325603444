"""The daemon's x-ray component: turns stored ``xray.scan`` events into ledger rows and alarms.

It sits on the store's commit listener (so it sees exactly what was stored,
whichever adapter emitted it) and, at start, catches up on every scan stored
after the ledger's cursor — a kill -9 between an event's commit and its
ledger row costs nothing. Adapters use it for exactly-once emission:
``recorded(key)`` knows every scan already in the store, because start-up
catch-up runs before any driver starts.

Central's signed dose records for other sites arrive on the site's dose
topic through the MQTT link and are applied on this component's own thread.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.supervisor import SupervisedThread
from services.xray.ledger import (
    DoseCheck,
    DoseLedger,
    LedgerCorrupt,
    Recorded,
    cannot_decide,
    set_aside,
)
from services.xray.rules import alarms
from services.xray.totals import MAX_DOC_BYTES, DoseRecordsRejected, apply, parse_verified

log = structlog.get_logger("edge.xray")
SOURCE = "xray"
class XrayService:
    """Component ``xray``: dose ledger upkeep, lawful-scan and dose alarms, central reconciliation."""

    name = "xray"

    def __init__(self, settings, store, emit, link=None, on_change=None, now=time.time, clocks=None):
        self.settings, self.store, self._emit, self.link = settings, store, emit, link
        self._now = now  # the daemon's trusted time: judges central's records and their keys' expiry
        self._recovered: dict[str, Any] | None = None
        # ``clocks``: the daemon's two (edge.uptime): a dose leaves the window only when both say so.
        try:
            self.ledger = DoseLedger(settings.state_dir, settings.site, settings.xray, clocks=clocks)
        except LedgerCorrupt as exc:
            # The gate must keep working: start a fresh ledger, rebuilt from the stored
            # events at start(), keep the damaged file, and tell supervisors.
            moved = set_aside(settings.state_dir)
            log.error("xray_ledger_corrupt_set_aside", error=str(exc)[:300], moved_to=moved)
            self._recovered = {"problem": str(exc)[:300], "moved_to": moved}
            self.ledger = DoseLedger(settings.state_dir, settings.site, settings.xray, clocks=clocks)
        self._queue: queue.Queue = queue.Queue()
        self._emitted: dict[str, str] = {}
        self._thread = SupervisedThread(self._run, name="xray-ledger", emit=emit, on_change=on_change)
        self._running = False
        self._trusted: dict | None = None
        self.counts = {"scans": 0, "duplicates": 0, "alarms": 0, "dose_docs_applied": 0,
                       "dose_docs_rejected": 0, "errors": 0}

    @classmethod
    def from_daemon(cls, daemon) -> XrayService:
        return cls(daemon.settings, daemon.store, daemon.emit, daemon.link, daemon.notify_health_changed,
                   now=daemon.trusted_now, clocks=daemon.clocks)

    # -- component -----------------------------------------------------------

    def start(self) -> None:
        self.store.add_listener(self._on_commit)
        caught_up = self._catch_up()
        if self._recovered is not None:
            self._emit("xray.ledger_recovered", {
                **self._recovered, "rebuilt_scans": caught_up,
                "detail": "the dose ledger was unreadable; it was rebuilt from the scans still in the "
                          "event store. Older doses are missing: ask central to resend dose records "
                          "and check subjects with `edge xray ledger`"}, "alarm", SOURCE)
        self._thread.start()
        if self.link is not None:
            topic = self.settings.xray.dose_topic.format(site=self.settings.site)
            self.link.subscribe(topic, self._on_dose_message, qos=1)
        log.info("xray_service_started", caught_up=caught_up, last_seq=self.ledger.last_seq())

    def stop(self) -> None:
        self._thread.stop()
        self._queue.put(None)
        self._thread.join(10)
        self.ledger.close()

    def status(self) -> dict[str, Any]:
        state = "ok" if not self.counts["errors"] else "degraded"
        if not self._thread.is_alive():
            state = "down"  # fail closed: check() refuses to decide meanwhile
        return {"status": state, "faults": self._thread.faults,
                "ledger_seq": self.ledger.last_seq() if self.ledger.is_open else None,
                "backlog": self._queue.qsize(), **self.counts}

    # -- what drivers and the gate policy call -------------------------------

    def recorded(self, key: str) -> str | None:
        """The record hash of the stored scan with this key, or None: emit only on None.

        A different hash under the same key is a scanner reusing an id: the
        caller refuses it rather than silently dropping a real dose.
        """
        if key in self._emitted:
            return self._emitted[key]
        return self.ledger.scan_hash(key)

    def emitted(self, key: str, record_sha256: str) -> None:
        """A driver stored an ``xray.scan`` with this key (the ledger row follows shortly)."""
        self._emitted[key] = record_sha256

    def check(self, subject: str) -> DoseCheck:
        """May ``subject`` be scanned now? The gate policy calls this before a scan.

        Waits (briefly) until every scan already stored is in the ledger, so the
        answer counts the scan that just happened. Call it from your own thread,
        never from a store listener (the ledger worker may be waiting on the store).
        While the ledger worker is down the answer is "cannot decide" (refused):
        a scan it has not counted must not make the total look lower than it is.
        """
        if not self._thread.is_alive():
            return cannot_decide(subject, "the dose ledger is not running in the daemon "
                                 f"({self._thread.last_error or 'stopped'}); it restarts by itself")
        if not self.wait_idle(timeout=2.0):
            log.warning("xray_check_with_backlog", backlog=self._queue.qsize())
        return self.ledger.check(subject)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued scan is in the ledger (tests, orderly shutdown)."""
        if not self._thread.is_alive():
            return self._queue.empty()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    # -- internals -----------------------------------------------------------

    def _on_commit(self, events) -> None:
        # Inside the store's commit: only queue, never block.
        for event in events:
            if event.type == "xray.scan":
                self._queue.put(("scan", event.seq, event.payload, event.ts))

    def _on_dose_message(self, topic: str, payload: bytes, props=None) -> None:
        # paho's network thread: only queue.
        self._queue.put(("dose", topic, payload))

    def _catch_up(self) -> int:
        count, after = 0, self.ledger.last_seq()
        while True:
            rows = self.store.tail(1000, type_glob="xray.scan", after_seq=after)
            if not rows:
                return count
            for seq, body, _acked in rows:
                event = json.loads(body)
                self._record(seq, event["payload"], datetime.fromisoformat(event["ts"]))
                after, count = seq, count + 1

    def _run(self) -> None:
        if self._running:  # a restart after a fault: count what was stored while we were down
            self._catch_up()
        self._running = True
        self._work()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                if item[0] == "scan":
                    self._record(item[1], item[2], item[3])
                else:
                    self._apply_dose_message(item[1], item[2])
            except EdgeError as exc:
                # The scan stays after the ledger cursor, so the next start retries it.
                self.counts["errors"] += 1
                log.error("xray_record_failed", error=str(exc)[:300], kind=item[0])

    def _record(self, seq: int, payload: dict[str, Any], stored_at: datetime) -> Recorded:
        def raise_alarms(rec: Recorded) -> None:
            if rec.time_replaced:
                log.warning("xray_scanner_clock_suspect", scanner=payload["scanner"], scan_time=payload["time"])
                self._emit("xray.scanner_clock", {
                    "scanner": payload["scanner"], "scan_id": payload["scan_id"], "scan_time": payload["time"],
                    "stored_at": stored_at.isoformat(),
                    "detail": "scan time is over a day from the device's clock; the dose is counted "
                              "at the time the device stored it; check the scanner's clock"}, "normal", SOURCE)
            for type_, body in alarms(payload, rec, self.settings.xray):
                self._emit(type_, body, "alarm", SOURCE)
                self.counts["alarms"] += 1
                log.warning("xray_alarm", type=type_, scan_id=payload["scan_id"],
                            problem=body.get("problem"))

        rec = self.ledger.record_local(payload, seq, on_new=raise_alarms, stored_at=stored_at)
        self.counts["scans" if rec.inserted else "duplicates"] += 1
        return rec

    def _apply_dose_message(self, topic: str, raw: bytes) -> None:
        try:
            if len(raw) > MAX_DOC_BYTES:
                raise DoseRecordsRejected(f"dose records: {len(raw)} bytes is over the {MAX_DOC_BYTES}-byte limit")
            records = parse_verified(raw, site=self.settings.site, trusted=self._trusted_keys(),
                                     clock_skew_s=self.settings.trust.clock_skew_s,
                                     now=datetime.fromtimestamp(self._now(), UTC))
        except DoseRecordsRejected as exc:
            self.counts["dose_docs_rejected"] += 1
            log.error("xray_dose_records_rejected", topic=topic, error=str(exc)[:300])
            self._emit("xray.dose_records_rejected", {"topic": topic, "reason": str(exc)[:300]}, "alarm", SOURCE)
            return
        counts = apply(self.ledger, records)
        self.counts["dose_docs_applied"] += 1
        log.info("xray_dose_records_applied", issued_at=records.issued_at.isoformat(), **counts)
        self._emit("xray.dose_records_applied", {"issued_at": records.issued_at.isoformat(), **counts},
                   "normal", SOURCE)

    def _trusted_keys(self):
        """The keys that may sign dose records (role ``directory``), judged live (revocation)."""
        if self._trusted is None:
            from edge.trust import TrustAnchorError, trust_store

            try:  # key expiry by the trusted time too: a clock set back revives no retired key
                self._trusted = trust_store(self.settings, clock=self._now).keys_for("dose_records")
            except (OSError, TrustAnchorError) as exc:
                raise DoseRecordsRejected(f"dose records: cannot load [trust].central_keys: {exc}") from None
        return self._trusted
