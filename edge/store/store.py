"""The durable event store: every event lands here before it goes anywhere.

``append`` returns only when the event is fsync'd (WAL, synchronous=FULL). A
writer thread folds concurrent appends into one transaction (group commit; a
lone append commits in its caller's thread, see ``_writer``), assigns ``seq``, extends the audit chain and enforces the size cap by
priority: acked history goes first, then pending telemetry, then pending
normal events; alarms are never dropped. The cap also follows the free space of
the disk (``_disk``); what a short disk costs is counted and reported
(``_pressure``, ``_space``); a corrupt file is moved aside and salvaged (``_salvage``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from edge.clock import ClockMonitor
from edge.config import StoreSettings
from edge.errors import EventInvalid, StoreError
from edge.events import Event, make_event, new_event_id, set_seqs, wire
from edge.seqranges import merge, runs, union
from edge.sqlite import open_db
from edge.store import _chain, _dropruns
from edge.store._acks import AckRanges
from edge.store._disk import DiskRoom, no_space
from edge.store._lock import StoreLock
from edge.store._pressure import Pressure
from edge.store._reader import KEY_NAME, StoreReader
from edge.store._recovery import recover, recovery_recorded
from edge.store._rows import ROW_OVERHEAD, RowsMixin
from edge.store._schema import migrate
from edge.store._seqfile import SeqReservation
from edge.store._space import SpaceMixin, empty_report, protected_sql
from edge.store._writer import GroupCommitWriter, Job

_ALARM, _NORMAL, _TELEMETRY = 0, 1, 2
_REPORT_RANGES_MAX = 1000  # a report naming this many seq ranges goes out at once, interval or not
_EVICT_HEADROOM = 0.01  # evict 1% of max_bytes beyond the need, so a full store is not evicting per append
_META_HOT_SQL = "INSERT OR REPLACE INTO meta VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)"
_UNSET = object()

log = structlog.get_logger("edge.store")


class Store(RowsMixin, SpaceMixin, StoreReader):
    """Durable, ordered, tamper-evident event log with an outbox for the uplink."""

    ROW_OVERHEAD = ROW_OVERHEAD

    def __init__(self, state_dir: Path, *, device: str, site: str,
                 settings: StoreSettings | None = None, clock: ClockMonitor | None = None):
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(state_dir, readonly=False)
        self.device, self.site = device, site
        self.settings = settings or StoreSettings()
        self.clock = clock or ClockMonitor()
        self._listeners: list[Callable[[list[Event]], None]] = []
        # Seq ranges the uplink has in flight or knows delivered (acks not yet recorded):
        # never dropped as "never left the device" (set by the uplink; called inside a commit).
        self.protected: Callable[[], list[tuple[int, int]]] = list
        self._pending_rows: list = []  # flat row values of the batch, not yet inserted
        self._meta_written: dict = {}  # the rarely-changing meta values last committed
        self._dir_lock = StoreLock(state_dir)  # before anything is read or moved
        try:
            self._open(state_dir)
        except BaseException:
            self._dir_lock.release()  # a failed start must not keep the next attempt out
            raise

    def _open(self, state_dir: Path) -> None:
        self._key = _chain.load_key(state_dir, state_dir / KEY_NAME)
        self._seqfile = SeqReservation(state_dir / "seq.reserved")
        recovered = recover(self.path, self._seqfile.limit + 1)
        self._w = open_db(self.path, auto_vacuum="INCREMENTAL")
        migrate(self._w)
        self._load_state()
        self._disk = DiskRoom(self.path, self._w, self.settings.reserve_bytes)
        self._w.execute(f"PRAGMA journal_size_limit = {self._disk.wal_limit}")  # a grown WAL shrinks back
        self._cap = self._disk.refresh(self.settings.max_bytes, self._used)
        self._pressure = Pressure()
        self._retry_timer: threading.Timer | None = None
        if recovered:
            from edge.store._salvage import salvage_store

            salvage_store(self, state_dir, recovered)
        self._writer = GroupCommitWriter(
            self._run_batch, self._maintenance,
            batch_max=self.settings.batch_max, idle_interval=self.settings.maintenance_interval_s,
            inline=True,
        )
        self._writer.start()
        if recovered:
            log.error("store_corrupt_moved_aside", **recovered)
            self.append(self._system_event("system.store_recovered", recovered))
            recovery_recorded(self.path)

    # -- start-up -------------------------------------------------------------

    def _load_state(self) -> None:
        meta = dict(self._w.execute("SELECT key, value FROM meta").fetchall())
        if "next_seq" not in meta:
            # New file: continue above every seq ever reserved (matters after recovery).
            start = self._seqfile.limit + 1
            self._w.execute("BEGIN IMMEDIATE")  # autocommit connection: `with` alone opens no transaction
            self._checkpoint(start - 1, _chain.GENESIS)
            self._w.execute("INSERT INTO meta VALUES ('next_seq', ?)", (start,))
            self._w.execute("COMMIT")
            meta["next_seq"] = start
        self._next_seq = meta["next_seq"]
        # This store's identity, carried in events and state: a replaced store (its seqs start
        # again at 1) is then a new (device, store) stream to central, not a run of duplicates.
        self.store_id = meta.get("store_id")
        if self.store_id is None:
            self.store_id = new_event_id()
            self._w.execute("INSERT OR REPLACE INTO meta VALUES ('store_id', ?)", (self.store_id,))
        self._prev_hash = meta.get("head_hash", _chain.GENESIS)
        if "head_hash" not in meta:
            row = self._w.execute("SELECT hash FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
            self._prev_hash = row[0] if row else _chain.GENESIS
        self._used = meta.get("used_bytes", 0)
        self._counters = {k: meta.get(k, 0) for k in (
            "acked_total", "dropped_alarm", "dropped_normal", "dropped_telemetry",
            "refused_total", "purged_acked", "reported_normal", "reported_telemetry")}
        self._last_ack_at = meta.get("last_ack_at")
        self._full = bool(meta.get("full", 0))
        # The least important priority refused while full; an append of it (or a less
        # important one) succeeding again ends the full episode.
        self._full_prio = _NORMAL
        self._unreported: dict = empty_report()
        self._last_drop_report = float("-inf")
        # Drops counted but never reported (the process died inside the rate limit): report them.
        for prio in ("normal", "telemetry"):
            if missed := self._counters[f"dropped_{prio}"] - self._counters[f"reported_{prio}"]:
                self._unreported["by_priority"][prio] = missed
                self._unreported["count"] += missed
        self._acks = AckRanges(self._w)  # acks of big drains, not yet folded into acked_at

    # -- public API -----------------------------------------------------------

    def add_listener(self, fn: Callable[[list[Event]], None]) -> None:
        """Call ``fn(events)`` after each commit, on the thread that committed (the writer's, or
        an appending thread committing its own events). Must not block or append."""
        self._listeners.append(fn)

    def append(self, event: Event) -> Event:
        """Store one event durably; returns it with its ``seq``."""
        return self.append_many([event])[0]

    def append_many(self, events: list[Event]) -> list[Event]:
        """Store events durably in one go (all or none); returns them with their seqs: the
        same objects, given their seq once committed (a copy for an event given twice)."""
        for event in events:
            if event.seq is not None:
                raise EventInvalid(f"event {event.id} already has seq {event.seq}; the store assigns seq")
            try:
                event._wire  # noqa: B018 -- serialised already (make_event does it)
            except AttributeError:
                wire(event)  # here, in the producer's thread: the writer's critical path stays short
        return self._writer.submit(Job(items=list(events))).wait()

    def mark_acked(self, seqs: Iterable[int]) -> int:
        """Mark events as delivered (broker PUBACKed them); returns how many changed."""
        return self.mark_acked_ranges(list(runs(sorted(set(seqs)))))

    def mark_acked_ranges(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Mark every event in these (first, last) seq ranges delivered; returns how many changed."""
        ranges = union(ranges)
        size = sum(hi - lo + 1 for lo, hi in ranges)
        return self._writer.submit(Job(lambda: self._ack(ranges), size=size)).wait() if ranges else 0

    def run_maintenance(self) -> None:
        """Fold range acks into acked_at, apply retention, fold purged history into checkpoints now."""
        self._writer.submit(Job(lambda: self._acks.fold(None))).wait()
        self._writer.submit(Job(self._retention)).wait()

    def emit_system(self, type: str, payload: dict, priority: str = "alarm") -> Event:
        return self.append(self._system_event(type, payload, priority))

    def close(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        try:  # drops not yet reported (rate limit) are reported before the store closes
            self._writer.submit(Job(lambda: self._report_drops(force=True))).wait()
        except StoreError:
            pass  # already closed
        self._writer.close()
        self._w.close()
        super().close()
        self._dir_lock.release()

    # -- inside a commit (one thread at a time) ----------------------------------

    def _system_event(self, type: str, payload: dict, priority: str = "alarm") -> Event:
        return make_event(device=self.device, site=self.site, type=type, source="store",
                          payload=payload, priority=priority, clock=self.clock.state())

    def _run_batch(self, jobs: list[Job], before_commit: Callable[[], None] = lambda: None) -> None:
        self._retried = None
        if self._pressure.parked:  # alarms whose commit failed for space: try them first
            self._retried = Job(items=self._pressure.take_parked())
            jobs = [self._retried, *jobs]
        error = self._attempt(jobs, before_commit)
        if error is not None and no_space(error) and self._disk.release_reserve():
            error = self._attempt(jobs, before_commit)  # the reserve's room is for this batch
        if error is not None:
            self._failed(jobs, error)
            return
        if self._reporting:
            log.warning("store_pressure", **self._reporting)
            self._pressure.reported()
        if self._batch_events:
            for listener in self._listeners:
                try:
                    listener(self._batch_events)
                except Exception as exc:  # a consumer's bug must never stop durable storage
                    log.error("store_listener_failed", listener=getattr(listener, "__qualname__", "?"),
                              error_type=type(exc).__name__, error=str(exc)[:300])

    def _attempt(self, jobs: list[Job], before_commit: Callable[[], None]) -> Exception | None:
        """Run the jobs in one transaction; None when committed, else the error (rolled back)."""
        self._batch_events: list[Event] = []
        self._unsequenced: list[tuple[int, list[Event]]] = []  # (first seq, events): set at COMMIT
        self._reporting: dict | None = None
        saved = (self._next_seq, self._prev_hash, self._used, dict(self._counters),
                 self._last_ack_at, self._full, self._full_prio, _copy_report(self._unreported))
        try:
            self._cap = self._disk.cap(self.settings.max_bytes, self._used)
            self._w.execute("BEGIN IMMEDIATE")
            self._run_jobs(jobs)
            if self._unreported["count"]:
                self._report_drops()  # a report held back by its interval, now due
            self._report_pressure()
            self._flush_rows()
            self._seqfile.ensure(self._next_seq)
            self._write_meta()
            before_commit()  # the writer's hook right before COMMIT (see GroupCommitWriter)
            self._w.execute("COMMIT")
        except Exception as exc:  # sqlite, disk, or a bug: the batch fails whole, the writer lives on
            self._pending_rows, self._meta_written = [], {}
            if self._w.in_transaction:
                self._w.execute("ROLLBACK")
            (self._next_seq, self._prev_hash, self._used, self._counters,
             self._last_ack_at, self._full, self._full_prio, self._unreported) = saved
            self._acks.reload()
            return exc
        for seq, events in self._unsequenced:  # committed: now they have their seqs
            set_seqs(events, seq)  # a copy for the same event twice in a batch
            self._batch_events += events
        return None

    def _ack(self, ranges: list[tuple[int, int]]) -> int:
        now = time.time()
        changed = self._acks.ack(ranges, now)  # big acks: as ranges (see _acks)
        self._counters["acked_total"] += changed
        self._last_ack_at = now
        return changed

    def _write_meta(self) -> None:
        head_seq = self._next_seq - 1
        # The keys every append changes go in one fixed statement; the rest only when changed.
        self._w.execute(_META_HOT_SQL, (
            "next_seq", self._next_seq, "head_seq", head_seq, "head_hash", self._prev_hash,
            "head_mac", _chain.mac(self._key, b"head", head_seq, self._prev_hash),
            "used_bytes", self._used))
        cold = {"max_bytes": self.settings.max_bytes, "cap_bytes": self._cap, "full": int(self._full),
                "last_ack_at": self._last_ack_at, **self._counters}
        changed = [(k, v) for k, v in cold.items() if self._meta_written.get(k, _UNSET) != v]
        if changed:
            self._w.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", changed)
            self._meta_written.update(changed)

    # -- size cap and retention ------------------------------------------------

    def _make_room(self, need: int, priority: int) -> bool:
        """Free space for ``need`` bytes, evicting only what ``priority`` may evict."""
        excess = self._used + need - self._cap
        if excess <= 0:
            return True
        self._acks.fold(None)  # "acked history goes first" must see every ack
        # Evictable in order: acked history, pending telemetry, pending normal.
        classes = [("acked_at IS NOT NULL", None)]
        if priority <= _TELEMETRY:
            classes.append(("acked_at IS NULL AND priority = 2", "telemetry"))
        if priority <= _NORMAL:
            classes.append(("acked_at IS NULL AND priority = 1", "normal"))
        where_any = " OR ".join(f"({w})" for w, _ in classes)
        freeable = self._w.execute(
            f"SELECT COALESCE(SUM(length(body)), 0) + COUNT(*) * {ROW_OVERHEAD} FROM events WHERE {where_any}"
        ).fetchone()[0]
        if freeable < excess and priority != _ALARM:
            return False
        dropped: list[tuple] = []
        before = self._dropped_now()
        goal = excess + int(self._cap * _EVICT_HEADROOM)
        for where, label in classes:
            if goal <= 0:
                break
            goal -= self._evict(where, label, goal, dropped)
        if dropped:
            if self._disk.limited:
                self._pressure.note_dropped(before)
            report = self._unreported
            for _seq, prio in dropped:
                report["by_priority"][prio] = report["by_priority"].get(prio, 0) + 1
            report["count"] += len(dropped)
            report["seqs"] = merge(report["seqs"], [seq for seq, _prio in dropped])
            report["seq_from"], report["seq_to"] = report["seqs"][0][0], report["seqs"][-1][1]
            self._report_drops(force=len(report["seqs"]) >= _REPORT_RANGES_MAX)
        return True  # alarms are written even past the cap

    def _evict(self, where: str, label: str | None, excess: int, dropped: list) -> int:
        freed = 0
        keep = protected_sql(self.protected()) if label else ""  # acked history may always go
        while freed < excess:
            rows = self._w.execute(
                f"SELECT seq, hash, type, priority, length(body) FROM events WHERE {where}{keep} "
                "ORDER BY seq LIMIT 500").fetchall()
            if not rows:
                break
            batch = []
            for row in rows:
                batch.append(row)
                freed += ROW_OVERHEAD + row[4]
                if freed >= excess:
                    break
            self._remove_rows(batch, reason=f"dropped_{label}" if label else "purged_acked")
            if label:
                self._counters[f"dropped_{label}"] += len(batch)
                dropped.extend((r[0], label) for r in batch)
            else:
                self._counters["purged_acked"] += len(batch)
        return freed

    def _remove_rows(self, rows: list[tuple], reason: str) -> None:
        """Delete rows anywhere in the chain, leaving a signed hash so the walk continues."""
        _dropruns.record(self._w, self._key, sorted(rows), reason, time.time())
        self._w.executemany("DELETE FROM events WHERE seq = ?", [(r[0],) for r in rows])
        self._used -= sum(ROW_OVERHEAD + r[4] for r in rows)

    def _checkpoint(self, seq: int, digest: bytes) -> None:
        self._w.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                        (seq, digest, time.time(), _chain.mac(self._key, b"ckpt", seq, digest)))

    def _purge_prefix(self, upto: int) -> int:
        """Fold every chain entry with seq <= upto into a signed checkpoint."""
        row = (self._w.execute("SELECT hash FROM events WHERE seq = ?", (upto,)).fetchone()
               or _dropruns.hash_ending_at(self._w, upto))
        if row is None:
            return 0
        size, count = self._w.execute(
            "SELECT COALESCE(SUM(length(body)), 0), COUNT(*) FROM events WHERE seq <= ?", (upto,)).fetchone()
        self._checkpoint(upto, row[0])
        self._w.execute("DELETE FROM events WHERE seq <= ?", (upto,))
        self._w.execute("DELETE FROM dropped WHERE seq <= ?", (upto,))
        self._w.execute("DELETE FROM checkpoints WHERE seq < ?", (upto,))
        self._used -= size + count * ROW_OVERHEAD
        self._counters["purged_acked"] += count
        return count

    def _retention(self) -> int:
        """Purge acked history older than retention_hours or beyond retention_bytes."""
        first_pending = self._w.execute(
            "SELECT MIN(seq) FROM events INDEXED BY events_pending WHERE acked_at IS NULL").fetchone()[0]
        limit = (first_pending or self._next_seq) - 1  # only a fully-acked prefix may go
        cutoff = time.time() - self.settings.retention_hours * 3600
        by_age = self._w.execute(
            "SELECT MAX(seq) FROM events WHERE seq <= ? AND acked_at < ?", (limit, cutoff)).fetchone()[0] or 0
        by_size = self._w.execute(
            "SELECT seq FROM (SELECT seq, SUM(length(body) + ?) OVER (ORDER BY seq DESC) AS kept "
            "FROM events WHERE seq <= ?) WHERE kept > ? ORDER BY seq DESC LIMIT 1",
            (ROW_OVERHEAD, limit, self.settings.retention_bytes)).fetchone()
        upto = max(by_age, by_size[0] if by_size else 0)
        # Dropped records below the oldest stored row fold away too.
        oldest = self._w.execute("SELECT MIN(seq) FROM events").fetchone()[0] or self._next_seq
        upto = max(upto, min(oldest - 1, limit))
        return self._purge_prefix(upto) if upto > 0 else 0

    def _maintenance(self) -> None:
        self._run_batch([Job(self._acks.fold), Job(self._retention), Job(self._report_drops)])
        self._w.execute("PRAGMA incremental_vacuum")


def _copy_report(report: dict) -> dict:
    return {**report, "by_priority": dict(report["by_priority"])}  # "seqs" is a tuple: shared
