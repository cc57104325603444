"""Schema and migrations, versioned with SQLite's ``user_version``."""

from __future__ import annotations

import sqlite3

PRIORITY_CODE = {"alarm": 0, "normal": 1, "telemetry": 2}
PRIORITY_NAME = {v: k for k, v in PRIORITY_CODE.items()}

# Plain DDL, not sqlite-utils: four CREATE TABLEs read as clearly in SQL, and importing
# sqlite-utils (with dateutil, pluggy, tabulate) for a first start kept 1.1 MB in the
# daemon's RSS for the rest of its life. The text is what sqlite-utils generated, so
# stores created before and after this change have the same schema.
_V1 = [
    # seq is the rowid: appends go to the end of the b-tree, the cheapest insert SQLite has.
    'CREATE TABLE "events" (\n   "seq" INTEGER PRIMARY KEY,\n   "id" TEXT NOT NULL,\n'
    '   "type" TEXT NOT NULL,\n   "priority" INTEGER NOT NULL,\n   "ts" TEXT NOT NULL,\n'
    '   "body" BLOB NOT NULL,\n   "hash" BLOB NOT NULL,\n   "acked_at" REAL\n)',
    "CREATE INDEX events_pending ON events(seq) WHERE acked_at IS NULL",
    # Rows removed out of chain order (store-full drops) leave their hash here so
    # the audit chain stays walkable; a prefix of them folds into a checkpoint.
    'CREATE TABLE "dropped" (\n   "seq" INTEGER PRIMARY KEY,\n   "hash" BLOB,\n   "type" TEXT,\n'
    '   "priority" INTEGER,\n   "reason" TEXT,\n   "at" REAL,\n   "mac" BLOB\n)',
    'CREATE TABLE "checkpoints" (\n   "seq" INTEGER PRIMARY KEY,\n   "hash" BLOB,\n   "at" REAL,\n'
    '   "mac" BLOB\n)',
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
]


def _v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    # Acks of big drains as seq ranges, folded into events.acked_at later (see _acks.py).
    from edge.store._acks import SCHEMA

    conn.execute(SCHEMA)


def _v3(conn: sqlite3.Connection) -> None:
    # Drop records of consecutive seqs folded into one row (see _dropruns.py).
    from edge.store._dropruns import SCHEMA

    conn.execute(SCHEMA)


MIGRATIONS = [_v1, _v2, _v3]


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        # Explicit BEGIN: the connection is in autocommit mode, where ``with conn`` opens no
        # transaction, so a power cut mid-step left tables without the version and every
        # later start failed on "table already exists". SQLite DDL is transactional.
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

