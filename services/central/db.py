"""The central store: SQLite (embedded, the pilot) or PostgreSQL (psycopg 3 + pool), one interface.

``open_db(url)`` picks the dialect: ``postgresql://…`` or anything else as a
SQLite file path (``sqlite:///path`` accepted). ``write(parsed)`` stores one
batch in ONE transaction and returns only after it committed, so the caller may
acknowledge the batch's messages to the broker. Inserts are idempotent on the
event id and on (device, store, seq); a duplicate is counted, never an error.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.central import _migrate
from services.central._parse import EVENT_COLUMNS, Parsed

log = structlog.get_logger("edge.central.db")

GAPS_SQL = """
SELECT device, store, seq + 1 AS first_missing, next_seq - 1 AS last_missing
FROM (SELECT device, store, seq,
             LEAD(seq) OVER (PARTITION BY device, store ORDER BY seq) AS next_seq
      FROM events {where}) AS t
WHERE next_seq > seq + 1
ORDER BY device, store, first_missing
"""
DEVICE_COLUMNS = ("device", "site", "role", "version", "store", "online", "boot_seq", "started_at",
                  "state_at", "offline_reason", "last_seen")


class DbError(RuntimeError):
    """The central database refused or failed a write or a query."""


def open_db(url: str, **kwargs) -> CentralDb:
    if url.startswith(("postgresql://", "postgres://")):
        from services.central._pg import PgDb

        return PgDb(url, **kwargs)
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SqliteDb(Path(path))


def _iso(value: Any) -> Any:
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


class CentralDb:
    """What the ingest and the tools need from a database (both dialects)."""

    dialect = "?"

    def migrate(self) -> list[str]:
        raise NotImplementedError

    def write(self, parsed: Parsed) -> tuple[int, int]:
        """Store a batch atomically; (events inserted, duplicates ignored)."""
        raise NotImplementedError

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- reads shared by both dialects -------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        rows = self.query(f"SELECT {', '.join(DEVICE_COLUMNS)} FROM devices ORDER BY site, device")
        out = []
        for row in rows:
            d = dict(zip(DEVICE_COLUMNS, (_iso(v) for v in row), strict=True))
            d["online"] = None if d["online"] is None else bool(d["online"])
            out.append(d)
        return out

    def gaps(self, device: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE device = %s", (device,)) if device else ("", ())
        rows = self.query(GAPS_SQL.format(where=where), params)
        return [{"device": r[0], "store": r[1], "first_missing": r[2], "last_missing": r[3],
                 "missing": r[3] - r[2] + 1} for r in rows]

    def events(self, device: str | None, since: datetime | None, limit: int) -> list[dict[str, Any]]:
        cond, params = [], []
        if device:
            cond.append("device = %s")
            params.append(device)
        if since:
            cond.append("ts >= %s")
            params.append(self._ts(since))
        where = f"WHERE {' AND '.join(cond)}" if cond else ""
        rows = self.query(f"SELECT id, device, site, store, seq, type, priority, ts, received_at, body "
                          f"FROM events {where} ORDER BY ts, device, seq LIMIT %s", (*params, limit))
        return [dict(zip(EVENT_COLUMNS, (_iso(v) for v in r), strict=True)) for r in rows]

    # -- commands waiting for a second signature ---------------------------------

    def propose(self, doc: dict[str, Any]) -> None:
        """Keep a signed command for its second signer; the same id with other content is refused."""
        body, now = json.dumps(doc, sort_keys=True), self._ts(datetime.now(UTC))
        known = self.query("SELECT doc FROM proposals WHERE id = %s", (doc["id"],))
        if known and json.loads(known[0][0]) != doc:
            raise DbError(f"a different command with id {doc['id']} is already proposed")
        if not known:
            self.query("INSERT INTO proposals (id, doc, signatures, proposed_at, updated_at) "
                       "VALUES (%s, %s, %s, %s, %s) RETURNING id", (doc["id"], body, len(doc["signatures"]), now, now))

    def cosigned(self, doc: dict[str, Any]) -> None:
        """Store the command with its added signature (same id, same content underneath)."""
        self.query("UPDATE proposals SET doc = %s, signatures = %s, updated_at = %s WHERE id = %s RETURNING id",
                   (json.dumps(doc, sort_keys=True), len(doc["signatures"]), self._ts(datetime.now(UTC)), doc["id"]))

    def proposals(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT doc, signatures, proposed_at, updated_at FROM proposals ORDER BY proposed_at")
        return [{**json.loads(doc), "_signatures": n, "_proposed_at": _iso(p), "_updated_at": _iso(u)}
                for doc, n, p, u in rows]

    def proposal(self, command_id: str) -> dict[str, Any] | None:
        rows = self.query("SELECT doc FROM proposals WHERE id = %s", (command_id,))
        return json.loads(rows[0][0]) if rows else None

    def totals(self) -> dict[str, int]:
        events, devices = self.query("SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM devices)")[0]
        return {"events": events, "devices": devices}

    def _ts(self, value: datetime) -> Any:
        return value


class SqliteDb(CentralDb):
    """One SQLite file in WAL with synchronous=FULL: a commit is on disk before we ack."""

    dialect = "sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")

    def migrate(self) -> list[str]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")  # one migrating process at a time
        try:
            c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                      "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            applied = {r[0] for r in c.execute("SELECT version FROM schema_migrations")}
            done = []
            for version, name, sql in _migrate.pending(applied, "sqlite"):
                for stmt in _migrate.statements(sql):
                    c.execute(stmt)
                c.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                          (version, name, _iso(datetime.now(UTC))))
                done.append(name)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return done

    def write(self, parsed: Parsed) -> tuple[int, int]:
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(EVENT_COLUMNS))})",
                          [(*r[:7], _iso(r[7]), _iso(r[8]), r[9]) for r in parsed.events])
            inserted = c.total_changes - before
            self._devices(parsed)
            c.executemany("INSERT INTO rejects (received_at, topic, reason, payload) VALUES (?, ?, ?, ?)",
                          [(_iso(datetime.now(UTC)), *r) for r in parsed.rejects])
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise DbError(f"sqlite {self.path}: {exc}") from exc
        return inserted, len(parsed.events) - inserted

    def _devices(self, parsed: Parsed) -> None:
        c = self._conn
        for device, (site, seen) in sorted(parsed.last_seen.items()):
            c.execute("INSERT INTO devices (device, site, last_seen) VALUES (?, ?, ?) ON CONFLICT (device) "
                      "DO UPDATE SET last_seen = max(COALESCE(devices.last_seen, ''), excluded.last_seen)",
                      (device, site, _iso(seen)))
        for s in parsed.states:
            c.execute(
                "INSERT INTO devices (device, site, role, version, store, online, boot_seq, started_at, "
                "state_at, offline_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) "
                "DO UPDATE SET site = excluded.site, role = excluded.role, version = excluded.version, "
                "store = excluded.store, online = excluded.online, boot_seq = excluded.boot_seq, "
                "started_at = excluded.started_at, state_at = COALESCE(excluded.state_at, devices.state_at), "
                "offline_reason = excluded.offline_reason "
                "WHERE devices.boot_seq IS NULL OR excluded.boot_seq >= devices.boot_seq "
                "OR excluded.store IS NOT devices.store",
                (s["device"], s["site"], s["role"], s["version"], s["store"], int(s["online"]), s["boot_seq"],
                 _iso(s["started_at"]), _iso(s["state_at"]), s["offline_reason"]))

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql.replace("%s", "?"), params).fetchall()
        except sqlite3.Error as exc:
            raise DbError(f"sqlite {self.path}: {exc}") from exc

    def _ts(self, value: datetime) -> Any:
        return _iso(value.astimezone(UTC))

    def close(self) -> None:
        self._conn.close()


def retrying(fn, what: str, attempts: int = 5):
    """Run ``fn`` again after a transient conflict (deadlock between ingest processes)."""
    for attempt in range(attempts):
        try:
            return fn()
        except DbError as exc:
            if not getattr(exc, "transient", False) or attempt == attempts - 1:
                raise
            log.warning("central_db_retry", what=what, attempt=attempt + 1, error=str(exc)[:200])
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
