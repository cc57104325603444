"""The per-person dose ledger: every scan's dose, a rolling window, refusal at the limit.

One SQLite file (``state_dir/xray.db``) beside the event store, so the gate
decides offline. Every dose is a row keyed by (origin site, scan key):

- local scans are recorded once however often their event is replayed;
- central's records for *another* site replace that site's rows for the
  subject (newest issue wins), so a total never adds to itself; records for
  this site are ignored because the local rows are the source of truth.

A subject's total is the sum of rows inside the rolling window ending now.
A dose leaves the window only when both the wall clock (the daemon's trusted
time) and the device's persisted uptime say it has (edge.uptime): each row
keeps ``leave_up``, the uptime at which it may leave, so a clock pushed
forward drops no dose early. A local dose gets the rest of its window as of
the scan's own time; a dose from central, as of the document's ``issued_at``
(signed by central, never after this device's trusted time at receipt), so a
clock already pushed forward on arrival shortens nothing either.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.sqlite import open_db
from edge.uptime import Clocks, up_bound
from services.xray.settings import XraySettings

DB_NAME = "xray.db"
MAX_SCANNER_SKEW_S = 24 * 3600  # beyond this from the device's clock, a scan time is not trusted
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    origin TEXT NOT NULL, scan_key TEXT NOT NULL, subject TEXT, dose_usv REAL NOT NULL,
    at REAL NOT NULL, scan_id TEXT NOT NULL, reason TEXT, event_seq INTEGER, recorded_at REAL NOT NULL,
    record_sha256 TEXT, leave_up REAL, PRIMARY KEY (origin, scan_key));
CREATE INDEX IF NOT EXISTS scans_subject ON scans(subject, at);
CREATE TABLE IF NOT EXISTS remote_updates (
    subject TEXT NOT NULL, origin TEXT NOT NULL, issued_at REAL NOT NULL, applied_at REAL NOT NULL,
    PRIMARY KEY (subject, origin));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


class LedgerError(EdgeError):
    """The dose ledger could not be read or written."""


class LedgerCorrupt(LedgerError):
    """The ledger file is not a readable SQLite database (disk fault, truncated copy)."""


@dataclass(frozen=True, slots=True)
class DoseCheck:
    """May this person be scanned now? What the CLI and the gate policy act on."""

    subject: str
    allowed: bool
    total_usv: float
    limit_usv: float
    warning_usv: float
    remaining_usv: float
    warning: bool
    window_start: str
    reason: str
    decided: bool = True  # False: the ledger could not answer, so the scan is refused

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Recorded:
    """Outcome of recording one local scan: was it new, and the subject's total before/after."""

    inserted: bool
    before_usv: float
    after_usv: float
    time_replaced: bool = False  # the scanner's clock was implausible; the store's time was used


def cannot_decide(subject: str, why: str) -> DoseCheck:
    """The fail-closed answer when the ledger cannot be trusted to be complete: refused."""
    return DoseCheck(subject=subject, allowed=False, total_usv=0.0, limit_usv=0.0,
                     warning_usv=0.0, remaining_usv=0.0, warning=False,
                     window_start=datetime.now(UTC).isoformat(),
                     reason=f"cannot decide: {why}; do not scan until it is back (edge status)",
                     decided=False)


def set_aside(state_dir: Path) -> str:
    """Rename a damaged ledger (and its WAL) out of the way, keeping it as evidence."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = Path(state_dir) / f"{DB_NAME}.corrupt-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        source = Path(state_dir) / (DB_NAME + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return str(target)


def window_end(at: datetime, months: int) -> datetime:
    """When a dose taken at ``at`` leaves the window: from then on ``window_start`` is not before it."""
    month_index = at.year * 12 + at.month - 1 + months
    year, month = divmod(month_index, 12)
    try:
        return at.replace(year=year, month=month + 1)
    except ValueError:  # no such day (31 March + 1 month): it leaves as the next month begins
        year, month = divmod(month_index + 1, 12)
        return at.replace(year=year, month=month + 1, day=1, hour=0, minute=0, second=0, microsecond=0)


def window_start(now: datetime, months: int) -> datetime:
    """``now`` minus whole calendar months (31 March - 1 month = 28/29 February)."""
    month_index = now.year * 12 + now.month - 1 - months
    year, month = divmod(month_index, 12)
    month += 1
    for day in (now.day, 30, 29, 28):
        try:
            return now.replace(year=year, month=month, day=min(now.day, day))
        except ValueError:
            continue
    raise AssertionError("unreachable: day 28 exists in every month")


class DoseLedger:
    """Dose rows for one site. Thread-safe: one writer connection, one reader connection.

    Reads never queue behind a write's fsync (WAL lets them run beside it), so
    a driver asking ``scan_hash`` is not slowed by the service recording a scan.
    """

    def __init__(self, state_dir: Path, site: str, policy: XraySettings, *, readonly: bool = False,
                 clocks: Clocks | None = None):
        """``clocks``: the daemon's (trusted time, uptime); outside it, the wall clock and the
        uptime the daemon last persisted (edge.commands.seen.offline_clocks)."""
        self.path = Path(state_dir) / DB_NAME
        self.site, self.policy = site, policy
        if clocks is None:
            from edge.commands.seen import offline_clocks

            clocks = offline_clocks(state_dir)
        self._clocks = clocks
        self._lock, self._rlock = threading.Lock(), threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._leave_up = "leave_up"
        try:
            if not readonly:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = open_db(self.path)
                (state,) = self._conn.execute("PRAGMA quick_check").fetchone()
                if state != "ok":
                    raise LedgerCorrupt(f"{self.path}: dose ledger damaged: {state}")
                self._conn.executescript(_SCHEMA)
                self._bound_by_uptime()
            if self.path.exists():
                self._rconn = open_db(self.path, readonly=True)
                columns = [r[1] for r in self._rconn.execute("PRAGMA table_info(scans)")]
                # A ledger the daemon has not opened since the uptime bound came: the wall clock alone.
                self._leave_up = "leave_up" if "leave_up" in columns else "NULL"
        except LedgerCorrupt:
            self._close_quietly()
            raise
        except sqlite3.DatabaseError as exc:
            self._close_quietly()
            raise LedgerCorrupt(f"{self.path}: dose ledger unreadable: {exc}") from None
        except sqlite3.Error as exc:
            self._close_quietly()
            raise LedgerError(f"{self.path}: cannot open the dose ledger: {exc}") from None

    def _close_quietly(self) -> None:
        for conn in (self._conn, self._rconn):
            if conn is not None:
                conn.close()
        self._conn = self._rconn = None

    def close(self) -> None:
        with self._lock, self._rlock:
            # Reader first: the writer, closing last, checkpoints and removes the WAL.
            for conn in (self._rconn, self._conn):
                if conn is not None:
                    conn.close()
            self._conn = self._rconn = None

    @property
    def is_open(self) -> bool:
        return self._rconn is not None or self._conn is not None

    # -- writing -------------------------------------------------------------

    def _bound_by_uptime(self) -> None:
        """Give rows without a believable ``leave_up`` one, as if the wall clock were right now:
        rows from before the uptime bound, and rows further ahead of the uptime than any window
        (the persisted uptime was lost: they would stay counted for the device's whole past)."""
        conn = self._conn
        if "leave_up" not in [r[1] for r in conn.execute("PRAGMA table_info(scans)")]:
            conn.execute("ALTER TABLE scans ADD COLUMN leave_up REAL")
        now, uptime = self._clocks.now(), self._clocks.uptime()
        longest = self.policy.window_months * 31 * 86400 + MAX_SCANNER_SKEW_S
        rows = conn.execute("SELECT rowid, at FROM scans WHERE leave_up IS NULL OR leave_up > ?",
                            (uptime + longest,)).fetchall()
        if rows:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE scans SET leave_up = ? WHERE rowid = ?",
                             [(up_bound(self._leaves(at), now, uptime), rowid) for rowid, at in rows])
            conn.execute("COMMIT")

    def _leaves(self, at: float) -> float:
        return window_end(datetime.fromtimestamp(at, UTC), self.policy.window_months).timestamp()

    def record_local(self, payload: dict[str, Any], event_seq: int | None,
                     on_new: Callable[[Recorded], None] | None = None,
                     stored_at: datetime | None = None) -> Recorded:
        """Record an ``xray.scan`` payload from this site once; returns totals around it.

        ``on_new`` runs inside the transaction for a first sighting only: if it
        raises (e.g. the alarm could not be stored) nothing is recorded, so the
        scan is processed again on the next start instead of losing its alarm.
        """
        at = datetime.fromisoformat(payload["time"]).timestamp()
        replaced = stored_at is not None and abs(at - stored_at.timestamp()) > MAX_SCANNER_SKEW_S
        if replaced:
            # A scanner whose clock reset to 1970 (or runs a year fast) must not put
            # doses outside the window: count the dose when the device stored it.
            at = stored_at.timestamp()
        subject, dose = payload.get("subject"), float(payload["dose_usv"])
        now, uptime = self._clocks.now(), self._clocks.uptime()
        # The rest of its window as of the scan's time, by uptime too: a device clock pushed forward
        # by up to a day (beyond that the scan time is replaced by the stored time, above) shortens
        # nothing. A scan recorded over a day after it was taken (the ledger catching up after a
        # crash, or rebuilt) counts as of a day before now: its real age is not known by uptime.
        leave_up = up_bound(self._leaves(at), max(min(at, now), now - MAX_SCANNER_SKEW_S), uptime)
        with self._write() as conn:
            before = self._total(conn, subject, at, uptime) if subject else 0.0
            cur = conn.execute(
                "INSERT OR IGNORE INTO scans (origin, scan_key, subject, dose_usv, at, scan_id, reason, "
                "event_seq, recorded_at, record_sha256, leave_up) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (self.site, payload["key"], subject, dose, at, payload["scan_id"],
                 payload.get("reason"), event_seq, time.time(), payload.get("record_sha256"), leave_up))
            inserted = cur.rowcount == 1
            if event_seq is not None:
                conn.execute("INSERT INTO meta VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = max(value, excluded.value)", (event_seq,))
            rec = Recorded(inserted, before, before + dose if inserted else before, replaced)
            if inserted and on_new is not None:
                on_new(rec)
        return rec

    def apply_remote(self, subject: str, origin: str, records: Iterable[dict[str, Any]],
                     issued_at: datetime) -> str:
        """Replace ``origin``'s rows for ``subject``; returns applied | stale | own_site.

        Each row may leave the window by uptime after the rest of its window as of ``issued_at``
        (or now, if earlier): central signed the document no later than this device received it,
        so a device clock pushed forward at receipt does not shorten the count."""
        if origin == self.site:
            return "own_site"  # our own rows are the truth; central's copy of them would double count
        issued = issued_at.timestamp()
        now, uptime = self._clocks.now(), self._clocks.uptime()
        since = min(issued, now)
        with self._write() as conn:
            row = conn.execute("SELECT issued_at FROM remote_updates WHERE subject=? AND origin=?",
                               (subject, origin)).fetchone()
            if row and row[0] >= issued:
                return "stale"
            conn.execute("DELETE FROM scans WHERE subject=? AND origin=?", (subject, origin))
            conn.executemany(
                "INSERT OR REPLACE INTO scans (origin, scan_key, subject, dose_usv, at, scan_id, reason, "
                "event_seq, recorded_at, leave_up) VALUES (?,?,?,?,?,?,NULL,NULL,?,?)",
                [(origin, r["scan_id"], subject, float(r["dose_usv"]), r["time"].timestamp(),
                  r["scan_id"], time.time(), up_bound(self._leaves(r["time"].timestamp()), since, uptime))
                 for r in records])
            conn.execute("INSERT OR REPLACE INTO remote_updates VALUES (?,?,?,?)",
                         (subject, origin, issued, time.time()))
        return "applied"

    # -- reading -------------------------------------------------------------

    def last_seq(self) -> int:
        row = self._query("SELECT value FROM meta WHERE key='last_seq'")
        return int(row[0][0]) if row else 0

    def scan_hash(self, key: str) -> str | None:
        """SHA-256 of the raw record of this site's scan ``key``; None if not recorded."""
        rows = self._query("SELECT record_sha256 FROM scans WHERE origin=? AND scan_key=?", (self.site, key))
        return (rows[0][0] or "") if rows else None

    def total(self, subject: str, now: datetime | None = None) -> float:
        now = now or self._now()
        uptime = self._clocks.uptime()
        with self._rlock:
            if self._rconn is None:
                return 0.0  # no ledger yet: nothing recorded on this device
            # No upper bound: a scanner clock running fast must not hide a dose from the check.
            try:
                return self._total(self._rconn, subject, now.timestamp(), uptime, upper=False)
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: dose ledger query failed: {exc}") from None

    def check(self, subject: str, now: datetime | None = None) -> DoseCheck:
        """Whether ``subject`` may be scanned now under the site's limit."""
        now = now or self._now()
        p = self.policy
        total = round(self.total(subject, now), 6)
        allowed = total < p.limit_usv
        if allowed:
            reason = (f"{total:g} µSv of {p.limit_usv:g} µSv used in the last {p.window_months} months"
                      + ("; over the warning level" if total >= p.warning_usv else ""))
        else:
            reason = (f"at or over the limit: {total:g} µSv of {p.limit_usv:g} µSv in the last "
                      f"{p.window_months} months; do not scan, use another search method")
        return DoseCheck(subject=subject, allowed=allowed, total_usv=total, limit_usv=p.limit_usv,
                         warning_usv=p.warning_usv, remaining_usv=max(0.0, round(p.limit_usv - total, 6)),
                         warning=total >= p.warning_usv,
                         window_start=window_start(now, p.window_months).isoformat(), reason=reason)

    def history(self, subject: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """Every dose row of ``subject``, oldest first, each marked in or out of the window."""
        start = window_start(now or self._now(), self.policy.window_months).timestamp()
        uptime = self._clocks.uptime()
        rows = self._query(f"SELECT origin, scan_id, dose_usv, at, reason, {self._leave_up} FROM scans "
                           "WHERE subject=? ORDER BY at", (subject,))
        return [{"site": o, "scan_id": s, "dose_usv": d, "reason": r,
                 "in_window": at > start or (up is not None and up > uptime),
                 "time": datetime.fromtimestamp(at, UTC).isoformat()} for o, s, d, at, r, up in rows]

    # -- internals -----------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clocks.now(), UTC)

    def _total(self, conn: sqlite3.Connection, subject: str, at: float, uptime: float,
               upper: bool = True) -> float:
        start = window_start(datetime.fromtimestamp(at, UTC), self.policy.window_months).timestamp()
        # In the window until both clocks say it has left (edge.uptime.Moment.passed, in SQL).
        (value,) = conn.execute("SELECT COALESCE(SUM(dose_usv), 0) FROM scans WHERE subject=? "
                                f"AND (at>? OR {self._leave_up}>?) AND at<=?",
                                (subject, start, uptime, at if upper else float("inf"))).fetchone()
        return float(value)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._rlock:
            if self._rconn is None:
                return []
            try:
                return self._rconn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"{self.path}: dose ledger query failed: {exc}") from None

    def _write(self):
        return _Transaction(self)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT under the ledger's lock; rollback on error."""

    def __init__(self, ledger: DoseLedger):
        self.ledger = ledger

    def __enter__(self) -> sqlite3.Connection:
        self.ledger._lock.acquire()
        conn = self.ledger._conn
        if conn is None:
            self.ledger._lock.release()
            raise LedgerError(f"{self.ledger.path}: the dose ledger is closed or read-only")
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def __exit__(self, exc_type, exc, tb) -> None:
        conn = self.ledger._conn
        try:
            conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.ledger._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise LedgerError(f"{self.ledger.path}: dose ledger write failed: {exc}") from exc
