"""The central store: SQLite (embedded, the pilot) or PostgreSQL (psycopg 3 + pool), one interface.

``open_db(url)`` picks the dialect: ``postgresql://…`` or anything else as a
SQLite file path (``sqlite:///path`` accepted). ``write(parsed)`` stores one
batch in ONE transaction and returns only after it committed, so the caller may
acknowledge the batch's messages to the broker. Inserts are idempotent on the
event id and on (device, store, seq); a duplicate is counted, never an error.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from edge.sqlite import open_db as open_sqlite
from services.central import _migrate
from services.central._base import (
    DATA_ERRORS,
    DEVICE_COLUMNS,
    GAPS_SQL,
    CentralDb,
    DbError,
    iso,
    retrying,
)
from services.central._parse import EVENT_COLUMNS, Parsed

log = structlog.get_logger("edge.central.db")

__all__ = ["DEVICE_COLUMNS", "GAPS_SQL", "CentralDb", "DbError", "SqliteDb", "open_db", "retrying"]

# What a row's content makes SQLite refuse (as opposed to a locked, full or broken database).
_SQLITE_DATA = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


def open_db(url: str, **kwargs) -> CentralDb:
    if url.startswith(("postgresql://", "postgres://")):
        from services.central._pg import PgDb

        return PgDb(url, **kwargs)
    path = url.removeprefix("sqlite://") if url.startswith("sqlite://") else url
    return SqliteDb(Path(path))


class SqliteDb(CentralDb):
    """One SQLite file in WAL with synchronous=FULL: a commit is on disk before we ack."""

    dialect = "sqlite"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = open_sqlite(self.path, busy_timeout=30.0)

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
                          (version, name, iso(datetime.now(UTC))))
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
                          [(*r[:7], iso(r[7]), iso(r[8]), r[9]) for r in parsed.events])
            inserted = c.total_changes - before
            self._devices(parsed)
            c.executemany("INSERT INTO rejects (received_at, topic, reason, payload) VALUES (?, ?, ?, ?)",
                          [(iso(datetime.now(UTC)), *r) for r in parsed.rejects])
            c.execute("COMMIT")
        except (sqlite3.Error, *DATA_ERRORS) as exc:
            if c.in_transaction:
                c.execute("ROLLBACK")  # whatever failed: never leave the connection inside a transaction
            err = DbError(f"sqlite {self.path}: {type(exc).__name__}: {exc}")
            err.data = isinstance(exc, (*_SQLITE_DATA, *DATA_ERRORS))
            raise err from exc
        return inserted, len(parsed.events) - inserted

    def _devices(self, parsed: Parsed) -> None:
        c = self._conn
        for device, (site, seen) in sorted(parsed.last_seen.items()):
            c.execute("INSERT INTO devices (device, site, last_seen) VALUES (?, ?, ?) ON CONFLICT (device) "
                      "DO UPDATE SET last_seen = max(COALESCE(devices.last_seen, ''), excluded.last_seen)",
                      (device, site, iso(seen)))
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
                 iso(s["started_at"]), iso(s["state_at"]), s["offline_reason"]))

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql.replace("%s", "?"), params).fetchall()
        except sqlite3.Error as exc:
            raise DbError(f"sqlite {self.path}: {exc}") from exc

    def _ts(self, value: datetime) -> Any:
        return iso(value.astimezone(UTC))

    def close(self) -> None:
        self._conn.close()
