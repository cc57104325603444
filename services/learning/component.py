"""The learning cache as a daemon component: catalog in, content down, records out.

One worker thread owns the catalog and the cache's upkeep (paho's thread only
queues what arrives); the downloader has its own threads; the local API's
threads only read. The tablet works from the last verified catalog and the
cached files whether or not the broker is reachable.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.sqlite import open_db
from edge.supervisor import SupervisedThread
from edge.trust import daemon_keys_for, watch_revocations
from services.learning import protocol
from services.learning._cache import ContentCache
from services.learning._catalog import Catalog, CatalogKeeper, CatalogRejected
from services.learning._transfer import Downloader, Job
from services.learning.statements import parse_statement

log = structlog.get_logger("edge.learning")
RECONCILE_S = 30.0
# Families whose pending events never hold back a download: the tablet's own traffic.
NON_SECURITY = ("learning.", "message.")


class LearningComponent:
    name = "learning"

    def __init__(self, daemon):
        s = daemon.settings
        self.daemon, self.settings = daemon, s.learning
        self.device, self.site = s.device_id, s.site
        self.residents = set(s.learning.residents)
        root = s.state_dir / "learning"
        self.keeper = CatalogKeeper(root / "catalog.json", daemon_keys_for(daemon, "catalog"), s.site,
                                    clock=daemon.trusted_now)
        self.cache = ContentCache(root, s.learning.quota_bytes)
        self.downloader: Downloader | None = None
        self._events_db = s.state_dir / "events.db"
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gate_cache = (0.0, True)
        self._local = threading.local()
        self.catalogs_rejected = 0
        self.last_rejection: str | None = None
        self._scrub_from = ""
        watch_revocations(daemon, lambda: self._inbox.put(("revoked", None)))  # the worker checks again
        link = daemon.link
        if link is not None:  # subscribed before the link connects, like every tablet component
            link.subscribe(protocol.catalog_topic(self.site), self._on_catalog, qos=1)
            self.downloader = Downloader(
                link=link, site=self.site, device=self.device, cache=self.cache,
                concurrency=self.settings.concurrency, rate_limit_bytes_s=self.settings.rate_limit_bytes_s,
                chunk_timeout_s=self.settings.chunk_timeout_s, may_proceed=self._may_proceed,
                pinned=self.pinned, on_failed=self._on_failed, emit=getattr(daemon, "emit", None))

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        if self.downloader is None:
            log.warning("learning_offline_only", reason="no MQTT link configured; serving cached content")
        else:
            self.downloader.start()
        if self.keeper.load_problem:
            log.warning("learning_saved_catalog_unusable", reason=self.keeper.load_problem)
        self._thread = SupervisedThread(self._run, name="learning", emit=self.daemon.emit,
                                        on_change=getattr(self.daemon, "notify_health_changed", None))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread:
            self._thread.stop()
            self._thread.join(timeout=5)
        if self.downloader:
            self.downloader.stop()

    def _on_catalog(self, topic: str, payload: bytes, props) -> None:
        self._inbox.put(("catalog", bytes(payload)))

    def _on_failed(self, job: Job, reason: str) -> None:
        pass  # the next reconcile queues pinned items again; the reason shows in status

    def _run(self) -> None:
        next_reconcile = 0.0
        while not self._stop.is_set():
            try:
                msg = self._inbox.get(timeout=max(0.05, next_reconcile - time.monotonic()))
            except queue.Empty:
                msg = ("tick", None)
            if msg is None:
                break
            kind, data = msg
            if kind == "catalog":
                self._apply_catalog(data)
            elif kind == "revoked":
                self._verify_held()
            if time.monotonic() >= next_reconcile or kind != "tick":
                self._reconcile()
                self._scrub()
                next_reconcile = time.monotonic() + RECONCILE_S

    # -- catalog --------------------------------------------------------------

    def _apply_catalog(self, raw: bytes) -> None:
        try:
            catalog = self.keeper.offer(raw)
        except CatalogRejected as exc:
            self.catalogs_rejected += 1
            self.last_rejection = str(exc)
            held = self.keeper.current.version if self.keeper.current else None
            log.error("learning_catalog_rejected", reason=str(exc), kept_version=held)
            self.daemon.emit("learning.catalog_rejected", {"reason": str(exc), "kept_version": held},
                             "alarm", "learning")
            return
        if catalog is not None:
            log.info("learning_catalog_applied", version=catalog.version, courses=len(catalog.courses))

    def _verify_held(self) -> None:
        """After a revocation: the held catalog again, as at start (CatalogKeeper.verify_held)."""
        held = self.keeper.current.version if self.keeper.current else None
        problem = self.keeper.verify_held()
        if problem is None:
            return
        why = (f"the held catalog (version {held}) no longer verifies and was dropped; no course is "
               f"offered until central sends a new one: {problem}")
        self.catalogs_rejected += 1
        self.last_rejection = why
        log.error("learning_held_catalog_dropped", version=held, reason=problem)
        self.daemon.emit("learning.catalog_rejected", {"reason": why, "kept_version": None}, "alarm", "learning")

    def pinned(self) -> set[str]:
        catalog = self.keeper.current
        return catalog.pinned_hashes(self.device, self.residents) if catalog else set()

    def _reconcile(self) -> None:
        """Queue every pinned item not cached yet; drop partial files nobody wants."""
        catalog = self.keeper.current
        if catalog is None:
            return
        self.cache.drop_partials(set(catalog.items()))
        if self.downloader is None:
            return
        wanted = self.pinned()
        for course in catalog.courses:
            for item in course.items:
                if item.sha256 in wanted:
                    self.downloader.enqueue(item, catalog.chunk_size, course.id)

    def _scrub(self) -> None:
        budget = int(self.settings.verify_budget_bytes_per_hour * RECONCILE_S / 3600)
        if budget <= 0:
            return
        corrupt, self._scrub_from = self.cache.scrub(budget, self._scrub_from)
        for sha in corrupt:
            self.refetch(sha)

    # -- used by the local API and the CLI ------------------------------------

    def catalog(self) -> Catalog:
        if self.keeper.current is None:
            raise EdgeError("no verified catalog yet; it arrives from central when the tablet is online")
        return self.keeper.current

    def fetch_course(self, course_id: str) -> int:
        catalog = self.catalog()
        course = catalog.course(course_id)
        if course is None:
            known = ", ".join(c.id for c in catalog.courses) or "none"
            raise LookupError(f"no course {course_id!r} in catalog v{catalog.version} (known: {known})")
        if self.downloader is None:
            raise EdgeError("no MQTT link configured ([mqtt].brokers); content cannot be fetched")
        return sum(self.downloader.enqueue(i, catalog.chunk_size, course.id) for i in course.items)

    def refetch(self, sha: str) -> bool:
        """Drop a cached item (corrupt) and queue it again if the catalog still lists it."""
        self.cache.remove(sha)
        catalog = self.keeper.current
        if catalog is None or self.downloader is None:
            return False
        for course in catalog.courses:
            for item in course.items:
                if item.sha256 == sha:
                    return self.downloader.enqueue(item, catalog.chunk_size, course.id)
        return False

    def record_statement(self, doc: Any) -> dict[str, Any]:
        payload = parse_statement(doc, self.residents)
        self.daemon.emit("learning.statement", payload, "normal", "learning")
        return payload

    def _may_proceed(self) -> bool:
        """False while security events wait in the outbox: they must have the uplink first."""
        if not self.settings.yield_to_security:
            return True
        at, ok = self._gate_cache
        if time.monotonic() - at < 0.25:
            return ok
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_db(self._events_db, readonly=True)
            self._local.conn = conn
        row = conn.execute(
            "SELECT 1 FROM events INDEXED BY events_pending WHERE acked_at IS NULL AND priority <= 1 "
            "AND type NOT LIKE ? AND type NOT LIKE ? LIMIT 1", tuple(p + "%" for p in NON_SECURITY),
        ).fetchone()
        ok = row is None
        self._gate_cache = (time.monotonic(), ok)
        return ok

    def status(self) -> dict[str, Any]:
        catalog = self.keeper.current
        pinned = self.pinned()
        d = self.downloader
        return {
            **(self._thread.status() if self._thread else {"status": "starting"}),
            "catalog_version": catalog.version if catalog else None,
            "courses": len(catalog.courses) if catalog else 0,
            "cached_items": len(self.cache.hashes()),
            "cached_bytes": self.cache.used_bytes(),
            "pinned_bytes": self.cache.bytes_of(pinned),
            "pinned_missing": len([h for h in pinned if not self.cache.has(h)]),
            "quota_bytes": self.cache.quota,
            "evicted_total": self.cache.evicted_total,
            "corrupt_total": self.cache.corrupt_total + (d.counters["chunks_corrupt"] if d else 0),
            "catalogs_rejected": self.catalogs_rejected,
            "last_rejection": self.last_rejection,
            "paused_for_security": bool(d and d.paused),
            "downloads": d.in_flight() if d else [],
            "transfer": dict(d.counters) if d else {},
            "last_error": d.last_error if d else None,
            "failed_items": {sha[:12]: {"reason": f["reason"], "failures": f["failures"]}
                             for sha, f in list(d.failed.items())[:20]} if d else {},
        }
