"""Schema and migrations, versioned with SQLite's ``user_version``."""

from __future__ import annotations

import sqlite3
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlite_utils pulls in numpy: import it only when migrating
    import sqlite_utils

PRIORITY_CODE = {"alarm": 0, "normal": 1, "telemetry": 2}
PRIORITY_NAME = {v: k for k, v in PRIORITY_CODE.items()}


def _v1(db: sqlite_utils.Database) -> None:
    # seq is the rowid: appends go to the end of the b-tree, the cheapest insert SQLite has.
    db["events"].create(
        {"seq": int, "id": str, "type": str, "priority": int, "ts": str,
         "body": bytes, "hash": bytes, "acked_at": float},
        pk="seq", not_null={"id", "type", "priority", "ts", "body", "hash"},
    )
    db.execute("CREATE INDEX events_pending ON events(seq) WHERE acked_at IS NULL")
    # Rows removed out of chain order (store-full drops) leave their hash here so
    # the audit chain stays walkable; a prefix of them folds into a checkpoint.
    db["dropped"].create(
        {"seq": int, "hash": bytes, "type": str, "priority": int, "reason": str,
         "at": float, "mac": bytes}, pk="seq",
    )
    db["checkpoints"].create({"seq": int, "hash": bytes, "at": float, "mac": bytes}, pk="seq")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")


def _v2(db) -> None:
    # Acks of big drains as seq ranges, folded into events.acked_at later (see _acks.py).
    from edge.store._acks import SCHEMA

    db.execute(SCHEMA)


MIGRATIONS = [_v1, _v2]


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= len(MIGRATIONS):
        return
    db = _sqlite_utils().Database(conn)
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        # Explicit BEGIN: the connection is in autocommit mode, where ``with conn`` opens no
        # transaction, so a power cut mid-step left tables without the version and every
        # later start failed on "table already exists". SQLite DDL is transactional.
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _sqlite_utils():
    """sqlite_utils, imported without numpy and pandas.

    It imports them whenever they are installed (the dev and gate environments have
    numpy) only to accept their types in inserts, which migrations never do; that
    would keep ~14 MB in the daemon's RSS for its whole life after a migration.
    """
    hidden = [name for name in ("numpy", "pandas") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes "import numpy" raise ImportError, as if absent
    try:
        import sqlite_utils
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return sqlite_utils
