"""PostgreSQL dialect of the central store: psycopg 3, a connection pool, COPY into staging.

A batch is first COPYed straight into ``events`` inside a savepoint: the common
case (nothing in it seen before) costs one COPY. When a row is already there
(a redelivery, K processes racing), the savepoint is rolled back and the batch
goes through a temporary staging table and ``INSERT … SELECT … ON CONFLICT DO
NOTHING``, so duplicates are absorbed by the unique constraints, never an error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from services.central import _migrate
from services.central._base import DATA_ERRORS, CentralDb, DbError, retrying
from services.central._parse import EVENT_COLUMNS, Parsed

_COLS = ", ".join(EVENT_COLUMNS)
_STAGING = ("CREATE TEMP TABLE IF NOT EXISTS staging_events "
            "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_TRANSIENT = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
# What a row's content makes PostgreSQL (or psycopg's adaptation) refuse: retrying cannot help.
_DATA = (psycopg.DataError, psycopg.IntegrityError, pg_errors.ProgramLimitExceeded, *DATA_ERRORS)
_LOCK_KEY = 0x6564676543  # pg_advisory_xact_lock key: one migrating process at a time
_STATE_SQL = (
    "INSERT INTO devices (device, site, role, version, store, online, boot_seq, started_at, state_at, "
    "offline_reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (device) DO UPDATE SET "
    "site = excluded.site, role = excluded.role, version = excluded.version, store = excluded.store, "
    "online = excluded.online, boot_seq = excluded.boot_seq, started_at = excluded.started_at, "
    "state_at = COALESCE(excluded.state_at, devices.state_at), offline_reason = excluded.offline_reason "
    "WHERE devices.boot_seq IS NULL OR excluded.boot_seq >= devices.boot_seq "
    "OR excluded.store IS DISTINCT FROM devices.store")
_SEEN_SQL = ("INSERT INTO devices (device, site, last_seen) VALUES (%s, %s, %s) ON CONFLICT (device) "
             "DO UPDATE SET last_seen = GREATEST(devices.last_seen, excluded.last_seen)")


class PgDb(CentralDb):
    """PostgreSQL through a psycopg_pool.ConnectionPool (``pool_size`` connections at most)."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 4):
        self.url = url
        try:
            psycopg.connect(url, connect_timeout=10).close()  # fail fast and say why (the pool retries quietly)
            self.pool = ConnectionPool(url, min_size=1, max_size=pool_size, open=True,
                                       kwargs={"autocommit": True})
            self.pool.wait(timeout=30.0)
        except (psycopg.Error, Exception) as exc:
            raise DbError(f"cannot connect to PostgreSQL: {exc}") from exc

    def migrate(self) -> list[str]:
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                         "name text NOT NULL, applied_at timestamptz NOT NULL)")
            applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            done = []
            for version, name, sql in _migrate.pending(applied, "postgres"):
                for stmt in _migrate.statements(sql):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                             (version, name, datetime.now(UTC)))
                done.append(name)
        return done

    def write(self, parsed: Parsed) -> tuple[int, int]:
        return retrying(lambda: self._write(parsed), "write")

    def _write(self, parsed: Parsed) -> tuple[int, int]:
        rows = sorted(parsed.events, key=lambda r: (r[1], r[3], r[4]))  # one lock order for all writers
        try:
            with self.pool.connection() as conn, conn.transaction():
                inserted = self._insert(conn, rows) if rows else 0
                with conn.cursor() as cur:
                    if parsed.last_seen:
                        cur.executemany(_SEEN_SQL, [(d, site, seen) for d, (site, seen)
                                                    in sorted(parsed.last_seen.items())])
                    if parsed.states:
                        cur.executemany(_STATE_SQL, [
                            (s["device"], s["site"], s["role"], s["version"], s["store"], s["online"],
                             s["boot_seq"], s["started_at"], s["state_at"], s["offline_reason"])
                            for s in parsed.states])
                    if parsed.rejects:
                        now = datetime.now(UTC)
                        cur.executemany("INSERT INTO rejects (received_at, topic, reason, payload) "
                                        "VALUES (%s, %s, %s, %s)", [(now, *r) for r in parsed.rejects])
        except _TRANSIENT as exc:
            err = DbError(f"postgresql: {exc}")
            err.transient = True
            raise err from exc
        except (psycopg.Error, *DATA_ERRORS) as exc:
            err = DbError(f"postgresql: {type(exc).__name__}: {exc}")
            err.data = isinstance(exc, _DATA)
            raise err from exc
        return inserted, len(rows) - inserted

    @staticmethod
    def _insert(conn: psycopg.Connection, rows: list[tuple]) -> int:
        try:
            with conn.transaction(), conn.cursor() as cur:  # a savepoint: undone alone on a duplicate
                with cur.copy(f"COPY events ({_COLS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            return len(rows)
        except pg_errors.UniqueViolation:
            pass  # some rows were there already: take the slower path that skips them
        conn.execute(_STAGING)
        with conn.cursor() as cur:
            with cur.copy(f"COPY staging_events ({_COLS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute(f"INSERT INTO events ({_COLS}) SELECT {_COLS} FROM staging_events ON CONFLICT DO NOTHING")
            return cur.rowcount

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with self.pool.connection() as conn:
                return conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise DbError(f"postgresql: {exc}") from exc

    def copy_rows(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Bare COPY of event rows into ``table`` (the benchmark's limit)."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            with cur.copy(f"COPY {table} ({_COLS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def close(self) -> None:
        self.pool.close()
