"""Salvage after corruption: a damaged page costs the rows on it, nothing else.

A page holding pending events is overwritten with random bytes. The store is moved
aside as before, and now every readable row comes back with its id and seq; the
pending ones reach a real broker; the system.store_recovered alarm names the seq
ranges salvaged and the ones truly lost (the rows on the damaged page).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from edge.contract import StoreRecoveredPayload
from edge.events import make_event
from edge.store import Store

PAGE = 4096
EVENTS, ACKED = 3000, 500


def _fill(state: Path) -> dict[int, str]:
    store = Store(state, device="dev-1", site="site-1")
    try:
        ids = {}
        for i in range(EVENTS):
            e = store.append(make_event(device="dev-1", site="site-1", type="sim.beat", source="t",
                                        priority="normal", payload={"n": i, "pad": "x" * 150}))
            ids[e.seq] = e.id
        store.mark_acked(range(1, ACKED + 1))
    finally:
        store.close()
    return ids


def _corrupt_page_holding(db: Path, event_id: str) -> int:
    """Overwrite the whole page that holds ``event_id`` with random bytes; returns its number."""
    data = db.read_bytes()
    at = data.find(event_id.encode(), PAGE)  # the row's id column (and its body)
    assert at > 0, "the event is not in the main file (still in the WAL?)"
    page = at // PAGE
    with open(db, "r+b") as f:
        f.seek(page * PAGE)
        f.write(os.urandom(PAGE))
    return page


def _recovered(store: Store) -> dict:
    alarms = [json.loads(b)["payload"] for _s, b, _a in store.tail(100, type_glob="system.store_recovered")]
    assert len(alarms) == 1
    return alarms[0]


def _expand(ranges) -> set[int]:
    return {s for lo, hi in ranges for s in range(lo, hi + 1)}


def _damage(tmp_path: Path) -> tuple[Path, dict[int, str], str]:
    state = tmp_path / "state"
    ids = _fill(state)
    target = ids[2000]  # pending, in the middle of the file
    _corrupt_page_holding(state / "events.db", target)
    return state, ids, target


def test_every_row_outside_the_damaged_page_is_salvaged_with_its_id_and_seq(tmp_path):
    state, ids, target = _damage(tmp_path)
    store = Store(state, device="dev-1", site="site-1")
    try:
        report = _recovered(store)
        lost = _expand(report["lost_seqs"])
        rows = {seq: json.loads(body)["id"] for seq, body, _a in store.tail(100_000, type_glob="sim.*")}
        pending = {row[0] for row in store.outbox_bodies(100_000) if row[0] in ids}
        stats = store.stats()
        assert store.verify().ok, "the fresh chain is intact"
    finally:
        store.close()
    assert 2000 in lost, "the row on the damaged page is reported lost"
    assert 0 < len(lost) <= 40, f"one 4 KiB page holds a few rows, not {len(lost)}"
    assert set(rows) == set(ids) - lost, "every other row is back"
    assert all(rows[seq] == ids[seq] for seq in rows), "with its original id"
    assert pending == set(range(ACKED + 1, EVENTS + 1)) - lost, "what was pending is pending again"
    assert _expand(report["salvaged_pending_seqs"]) == pending
    assert report["salvaged_rows"] == len(rows) and report["salvaged_pending"] == len(pending)
    assert stats["pending"] == len(pending) + 1  # and the store_recovered alarm itself
    assert stats["stored"] == len(rows) + 1


def test_a_second_start_after_a_crash_mid_recovery_salvages_once(tmp_path):
    state, ids, _target = _damage(tmp_path)
    Store(state, device="dev-1", site="site-1")._dir_lock.release()  # "crashed" after moving aside
    store = Store(state, device="dev-1", site="site-1")
    try:
        rows = [seq for seq, _b, _a in store.tail(100_000, type_glob="sim.*")]
    finally:
        store.close()
    assert len(rows) == len(set(rows)) and len(rows) > EVENTS - 40


def test_salvaged_pending_events_reach_the_broker(tmp_path, base_config, mosquitto, edge_daemon, mqtt_collector):
    state, ids, _target = _damage(tmp_path)
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#", session=True)
    daemon = edge_daemon({**base_config, "state_dir": str(state), "mqtt": {"brokers": [mosquitto.uri]}})
    alarm = collector.wait_for(lambda c: c.events("system.store_recovered"), timeout=30,
                               what="the store_recovered alarm")[0]["payload"]
    StoreRecoveredPayload.model_validate(alarm)
    lost = _expand(alarm["lost_seqs"])
    want = set(range(ACKED + 1, EVENTS + 1)) - lost
    got = collector.wait_for(lambda c: (seen := {e["seq"]: e["id"] for e in c.events("sim.")}).keys() >= want
                             and seen, timeout=60, what="every salvaged pending event")
    assert all(got[seq] == ids[seq] for seq in want)
    assert 0 < len(lost) <= 40
    db = sqlite3.connect(f"file:{daemon.state_dir / 'events.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM events WHERE seq <= ?", (EVENTS,)).fetchone()[0] == EVENTS - len(lost)
    finally:
        db.close()


def test_a_file_that_cannot_be_read_at_all_says_so_instead_of_naming_seqs(tmp_path):
    state = tmp_path / "state"
    _fill(state)
    (state / "events.db").write_bytes(os.urandom(64 * PAGE))
    for extra in state.glob("events.db-*"):
        extra.unlink()
    store = Store(state, device="dev-1", site="site-1")
    try:
        report = _recovered(store)
    finally:
        store.close()
    assert report["salvaged_rows"] == 0 and report["lost_seqs"] == []
    assert "cannot be read at all" in report["salvage"]
