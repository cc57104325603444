"""A corrupt database is moved aside (never deleted), a fresh store starts, an alarm says so."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from edge.events import make_event
from edge.store import Store


def ev(n: int):
    return make_event(device="dev-1", site="site-1", type="sim.tick", source="t",
                      payload={"n": n, "pad": "y" * 300})


def _fill(state, count=200) -> int:
    store = Store(state, device="dev-1", site="site-1")
    last = 0
    for i in range(count):
        last = store.append(ev(i)).seq
    store.close()
    return last


def _corrupt_middle(db) -> bytes:
    size = db.stat().st_size
    garbage = os.urandom(8192)
    with open(db, "r+b") as f:
        f.seek(size // 2)
        f.write(garbage)
    return db.read_bytes()


def _alarms(store: Store, type_: str) -> list[dict]:
    return [json.loads(body) for _seq, body, _ in store.tail(1000, type_glob=type_)]


@pytest.mark.parametrize("damage", ["middle_pages", "whole_file", "header"])
def test_corrupt_file_is_moved_aside_and_a_fresh_store_continues_seq(tmp_path, damage):
    state = tmp_path / "state"
    last_old = _fill(state)
    db = state / "events.db"
    if damage == "middle_pages":
        corrupt_bytes = _corrupt_middle(db)
    elif damage == "whole_file":
        db.write_bytes(os.urandom(64 * 1024))
        corrupt_bytes = db.read_bytes()
    else:
        with open(db, "r+b") as f:
            f.write(b"this is not sqlite" * 10)
        corrupt_bytes = db.read_bytes()

    store = Store(state, device="dev-1", site="site-1")
    try:
        moved = sorted(p.name for p in state.glob("events.db.corrupt-*"))
        main = [name for name in moved if not name.endswith(("-wal", "-shm"))]
        assert len(main) == 1 and main[0].startswith("events.db.corrupt-20")
        assert (state / main[0]).read_bytes() == corrupt_bytes  # kept byte for byte

        [alarm] = _alarms(store, "system.store_recovered")
        assert alarm["priority"] == "alarm" and alarm["source"] == "store"
        assert sorted(alarm["payload"]["moved_to"]) == moved
        assert alarm["payload"]["problem"]
        assert alarm["seq"] > last_old  # seq continues above every seq handed out before

        new = store.append(ev(0))
        assert new.seq == alarm["seq"] + 1
        assert store.verify().ok
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        store.close()


def test_wal_and_shm_move_with_the_database(tmp_path):
    state = tmp_path / "state"
    _fill(state, 10)
    (state / "events.db").write_bytes(os.urandom(8192))
    (state / "events.db-wal").write_bytes(b"torn wal")
    store = Store(state, device="dev-1", site="site-1")
    try:
        names = sorted(p.name for p in state.glob("events.db.corrupt-*"))
        [wal] = [name for name in names if name.endswith("-wal")]
        assert (state / wal).read_bytes() == b"torn wal"  # the evidence is kept untouched
        assert sorted(_alarms(store, "system.store_recovered")[0]["payload"]["moved_to"]) == names
    finally:
        store.close()


def test_two_recoveries_in_the_same_second_keep_both_files(tmp_path):
    state = tmp_path / "state"
    _fill(state, 5)
    for round_ in range(2):
        (state / "events.db").write_bytes(b"garbage %d " % round_ * 1000)
        for p in state.glob("events.db-*"):
            p.unlink()
        Store(state, device="dev-1", site="site-1").close()
    kept = sorted(p.read_bytes()[:10] for p in state.glob("events.db.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))
    assert kept == [b"garbage 0 ", b"garbage 1 "]


def test_healthy_store_is_left_alone(tmp_path):
    state = tmp_path / "state"
    _fill(state, 5)
    store = Store(state, device="dev-1", site="site-1")
    try:
        assert not list(state.glob("*.corrupt-*"))
        assert _alarms(store, "system.store_recovered") == []
        assert store.append(ev(0)).seq == 6
    finally:
        store.close()


def test_daemon_starts_on_a_corrupt_store_and_reports_it(edge_daemon, base_config, tmp_path):
    state = tmp_path / "state"
    last_old = _fill(state, 50)
    _corrupt_middle(state / "events.db")
    (state / "events.db").write_bytes(os.urandom(4096))
    daemon = edge_daemon(base_config)
    try:
        out = daemon.cli("events", "tail", "--json", "--type", "system.store_recovered")
        assert out.returncode == 0, out.stderr
        [alarm] = [json.loads(line) for line in out.stdout.splitlines()]
        assert alarm["seq"] > last_old
        assert daemon.cli("audit", "verify").returncode == 0
    finally:
        assert daemon.stop() == 0


KILL_IN_MIGRATION = """
import os, signal, sys
from edge.store import _schema
real = _schema.MIGRATIONS[0]

def step(db):
    real(db)
    os.kill(os.getpid(), signal.SIGKILL)  # power cut after the tables, before the version

_schema.MIGRATIONS[0] = step
from edge.store import Store
Store(sys.argv[1], device="dev-1", site="site-1")
"""

KILL_AFTER_MOVE = """
import os, signal, sys
from edge.store.store import Store

def append(self, event):
    os.kill(os.getpid(), signal.SIGKILL)  # power cut after the move, before the alarm

Store.append = append
Store(sys.argv[1], device="dev-1", site="site-1")
"""


def _run_killed(code: str, state) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()


def test_power_cut_during_the_first_migration_leaves_a_store_that_opens(tmp_path):
    state = tmp_path / "state"
    _run_killed(KILL_IN_MIGRATION, state)
    store = Store(state, device="dev-1", site="site-1")
    try:
        assert store.append(ev(0)).seq == 1 and store.verify().ok
    finally:
        store.close()


def test_power_cut_between_move_and_alarm_still_records_the_alarm(tmp_path):
    state = tmp_path / "state"
    last_old = _fill(state, 20)
    (state / "events.db").write_bytes(os.urandom(8192))
    _run_killed(KILL_AFTER_MOVE, state)
    assert (state / "recovery.json").exists()
    moved = sorted(p.name for p in state.glob("events.db.corrupt-*"))
    assert moved
    store = Store(state, device="dev-1", site="site-1")
    try:
        [alarm] = _alarms(store, "system.store_recovered")
        assert alarm["payload"]["moved_to"] == moved and alarm["payload"]["recorded_late"] is True
        assert alarm["seq"] > last_old
        assert not (state / "recovery.json").exists()
    finally:
        store.close()
    store = Store(state, device="dev-1", site="site-1")  # and only once
    try:
        assert len(_alarms(store, "system.store_recovered")) == 1
    finally:
        store.close()
