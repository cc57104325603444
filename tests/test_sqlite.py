"""edge.sqlite.open_db, and that every database of the device still gets its durable settings from it."""

from __future__ import annotations

import sqlite3

import pytest

from edge.sqlite import open_db

FULL = 2  # PRAGMA synchronous: a commit is fsynced before it returns


def _pragmas(conn: sqlite3.Connection) -> dict:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "busy_timeout", "secure_delete", "foreign_keys",
                         "auto_vacuum")}


def test_a_writable_connection_is_wal_fsynced_autocommit_and_shared_across_threads(tmp_path):
    conn = open_db(tmp_path / "a.db")
    p = _pragmas(conn)
    assert (p["journal_mode"], p["synchronous"], p["busy_timeout"]) == ("wal", FULL, 5000)
    assert conn.isolation_level is None  # callers BEGIN IMMEDIATE themselves
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")  # autocommit: visible to another connection at once
    assert open_db(tmp_path / "a.db", readonly=True).execute("SELECT x FROM t").fetchall() == [(1,)]


def test_the_options_each_set_their_pragma(tmp_path):
    conn = open_db(tmp_path / "b.db", busy_timeout=10.0, secure_delete=True, foreign_keys=True,
                   auto_vacuum="INCREMENTAL")
    conn.execute("CREATE TABLE t (x)")
    p = _pragmas(conn)
    assert (p["busy_timeout"], p["secure_delete"], p["foreign_keys"], p["auto_vacuum"]) == (10000, 1, 1, 2)
    assert (p["journal_mode"], p["synchronous"]) == ("wal", FULL)  # auto_vacuum set before WAL still took


def test_readonly_neither_creates_nor_writes(tmp_path):
    with pytest.raises(sqlite3.OperationalError):
        open_db(tmp_path / "missing.db", readonly=True).execute("SELECT 1").fetchall()
    assert not (tmp_path / "missing.db").exists()
    writer = open_db(tmp_path / "c.db")
    writer.execute("CREATE TABLE t (x)")
    writer.close()  # checkpointed: an immutable reader does not look at the WAL
    for immutable in (False, True):
        ro = open_db(tmp_path / "c.db", readonly=True, immutable=immutable)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO t VALUES (1)")
        ro.close()


def test_wal_false_leaves_the_files_mode_alone(tmp_path):
    sqlite3.connect(tmp_path / "d.db").execute("CREATE TABLE t (x)")  # a rollback-journal file
    assert open_db(tmp_path / "d.db", wal=False).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_every_database_of_the_device_keeps_wal_and_a_full_fsync(tmp_path):
    """What each database had before the helper: WAL + synchronous FULL, and its extras."""
    from drivers.camera.gallery import Gallery
    from edge.commands.seen import SeenIds
    from edge.store import Store
    from services.central.db import SqliteDb
    from services.gate.occupancy import Occupancy
    from services.gate.state import GateState
    from services.messaging._crypto import AtRest
    from services.messaging._db import MailboxDB
    from services.xray.ledger import DoseLedger
    from services.xray.settings import XraySettings

    state = tmp_path / "state"
    store = Store(state, device="d", site="s")
    opened = {
        "store": (store._w, {"auto_vacuum": 2, "busy_timeout": 5000}),
        "gate_state": (GateState(state)._db, {}),
        "occupancy": (Occupancy(state)._db, {}),
        "seen": (SeenIds(state)._db, {}),
        "dose_ledger": (DoseLedger(state, "s", XraySettings())._conn, {}),
        "mailbox": (MailboxDB(state / "messaging" / "mailbox.db", AtRest(bytes(32)))._conn, {"secure_delete": 1}),
        "gallery": (Gallery(state)._db, {"secure_delete": 1, "foreign_keys": 1, "busy_timeout": 10000}),
        "central": (SqliteDb(tmp_path / "central.db")._conn, {"busy_timeout": 30000}),
    }
    for name, (conn, extra) in opened.items():
        p = _pragmas(conn)
        assert (p["journal_mode"], p["synchronous"]) == ("wal", FULL), name
        assert {k: p[k] for k in extra} == extra, name
    store.close()
