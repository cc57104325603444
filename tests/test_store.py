"""The durable store: append semantics, seq rules, outbox API, retention — on real SQLite files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import pytest

from edge.config import StoreSettings
from edge.errors import EventInvalid, StoreClosed
from edge.events import make_event
from edge.store import Store, StoreReader
from edge.store.store import ROW_OVERHEAD
from edge.testing.wait import wait_for


def ev(n: int = 0, priority: str = "normal", type: str = "sim.tick", pad: int = 0):
    payload = {"n": n, **({"pad": "x" * pad} if pad else {})}
    return make_event(device="dev-1", site="site-1", type=type, source="test", payload=payload,
                      priority=priority)


@pytest.fixture
def open_store(tmp_path):
    opened: list[Store] = []

    def make(**settings) -> Store:
        store = Store(tmp_path / "state", device="dev-1", site="site-1",
                      settings=StoreSettings(**settings))
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _seqs(state_dir) -> list[int]:
    with sqlite3.connect(state_dir / "events.db") as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM events ORDER BY seq")]


def test_append_returns_the_event_with_its_seq_and_stores_canonical_bytes(open_store):
    store = open_store()
    first = store.append(ev(1))
    second = store.append(ev(2))
    assert (first.seq, second.seq) == (1, 2)
    assert first.payload == {"n": 1} and first.device == "dev-1"
    body = store.tail(1)[0][1]
    assert body == second.canonical_bytes()
    assert json.loads(body)["seq"] == 2


def test_append_is_durable_synchronous_full_in_wal(open_store, tmp_path):
    store = open_store()
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    event = store.append(ev(7))
    # Another process sees it the moment append() returned: it is committed, not buffered.
    code = ("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
            "print(c.execute('SELECT id FROM events WHERE seq=?', (int(sys.argv[2]),)).fetchone()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "state" / "events.db"), str(event.seq)],
                         capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert out == event.id


def test_concurrent_appends_get_unique_strictly_increasing_seqs(open_store):
    store = open_store()
    per_thread: dict[int, list[int]] = {}
    start = threading.Barrier(8)

    def producer(k: int) -> None:
        start.wait()
        per_thread[k] = [store.append(ev(i)).seq for i in range(150)]

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = sorted(s for seqs in per_thread.values() for s in seqs)
    assert everything == list(range(1, 8 * 150 + 1))  # no duplicates, no gaps
    for seqs in per_thread.values():
        assert seqs == sorted(seqs)  # each producer sees its own appends in order
    assert _seqs(store.state_dir) == everything
    assert store.verify().ok


def test_append_many_is_all_or_nothing_and_contiguous(open_store):
    store = open_store()
    stored = store.append_many([ev(i) for i in range(5)])
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]


def test_event_with_a_seq_is_refused(open_store):
    store = open_store()
    stored = store.append(ev())
    with pytest.raises(EventInvalid, match="the store assigns seq"):
        store.append(stored)


def test_seq_is_64_bit_and_continues_above_the_reservation(tmp_path, open_store):
    state = tmp_path / "state"
    state.mkdir()
    (state / "seq.reserved").write_text(f"{2**40}\n")  # as if 2**40 seqs were handed out before
    store = open_store()
    assert store.append(ev()).seq == 2**40 + 1
    assert store.append(ev()).seq == 2**40 + 2
    assert int((state / "seq.reserved").read_text()) >= 2**40 + 2
    assert store.verify().ok


def test_seq_never_reused_after_purge_restart_or_lost_database(tmp_path, open_store):
    store = open_store(retention_hours=0, retention_bytes=0)
    seqs = [store.append(ev(i)).seq for i in range(10)]
    store.mark_acked(seqs)
    store.run_maintenance()
    assert store.stats()["stored"] == 0  # everything purged
    assert store.append(ev()).seq == 11
    store.close()

    store = open_store(retention_hours=0, retention_bytes=0)
    assert store.append(ev()).seq == 12
    assert store.verify().ok
    store.close()

    # Even if the database file vanished, seqs continue above everything ever handed out.
    for p in (tmp_path / "state").glob("events.db*"):
        p.unlink()
    store = open_store()
    assert store.append(ev()).seq > 12


def test_reservation_file_always_covers_committed_seqs(open_store, tmp_path):
    store = open_store()
    for i in range(3):
        seq = store.append(ev(i)).seq
        assert int((tmp_path / "state" / "seq.reserved").read_text()) >= seq


def test_outbox_next_mark_acked_and_stats(open_store):
    store = open_store()
    events = [store.append(ev(i, priority=p)) for i, p in enumerate(["normal", "alarm", "telemetry"] * 4)]
    rows = store.outbox_next(5)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert [r.priority for r in rows[:3]] == ["normal", "alarm", "telemetry"]
    assert rows[0].family == "sim" and rows[0].body == events[0].canonical_bytes()
    assert [r.seq for r in store.outbox_next(3, after_seq=10)] == [11, 12]

    before = store.stats()
    assert before["pending"] == 12 and before["acked_total"] == 0 and before["last_ack_at"] is None
    assert before["oldest_pending_seq"] == 1 and before["oldest_pending_age_s"] >= 0
    assert before["stored"] == 12 and before["bytes_used"] > 12 * 200

    assert store.mark_acked([1, 2, 3, 5]) == 4
    assert store.mark_acked([1, 2]) == 0  # idempotent: a duplicate PUBACK changes nothing
    assert store.mark_acked([]) == 0
    assert [r.seq for r in store.outbox_next(3)] == [4, 6, 7]
    after = store.stats()
    assert after["pending"] == 8 and after["acked_total"] == 4
    assert after["oldest_pending_seq"] == 4
    assert after["last_ack_at"] is not None and 0 <= after["last_ack_age_s"] < 60


def test_stats_are_readable_by_a_read_only_reader_while_the_store_writes(open_store, tmp_path):
    store = open_store()
    store.append(ev())
    reader = StoreReader(tmp_path / "state")
    try:
        store.append(ev())
        assert reader.stats()["pending"] == 2
        assert reader.verify().ok
        with pytest.raises(sqlite3.OperationalError):
            reader._conn().execute("DELETE FROM events")
    finally:
        reader.close()


def test_listener_gets_committed_events_with_seqs(open_store):
    store = open_store()
    got: list = []
    store.add_listener(got.extend)
    stored = store.append(ev(1))
    assert [e.seq for e in got] == [stored.seq] and got[0].id == stored.id


def test_closed_store_refuses_appends(open_store):
    store = open_store()
    store.close()
    with pytest.raises(StoreClosed):
        store.append(ev())


def _backdate_acks(state_dir, seqs, seconds):
    with sqlite3.connect(state_dir / "events.db") as conn:
        conn.executemany("UPDATE events SET acked_at = acked_at - ? WHERE seq = ?",
                         [(seconds, s) for s in seqs])


def test_retention_by_age_purges_only_old_acked_history(open_store, tmp_path):
    state = tmp_path / "state"
    store = open_store()
    seqs = [store.append(ev(i)).seq for i in range(12)]
    store.mark_acked(seqs[:10])
    store.close()
    _backdate_acks(state, seqs[:5], 2 * 3600)  # acked two hours ago

    store = open_store(retention_hours=1)
    store.run_maintenance()
    assert _seqs(state) == seqs[5:]
    stats = store.stats()
    assert stats["purged_acked"] == 5 and stats["pending"] == 2
    report = store.verify()
    assert report.ok and report.first_seq == 6 and report.last_seq == 12
    assert store.append(ev()).seq == 13 and store.verify().ok


def test_retention_never_purges_past_a_pending_event(open_store, tmp_path):
    store = open_store(retention_hours=0, retention_bytes=0)
    assert [store.append(ev(i)).seq for i in range(6)] == [1, 2, 3, 4, 5, 6]
    store.mark_acked([1, 2, 4, 5, 6])  # 3 is still waiting for the broker
    store.run_maintenance()
    assert _seqs(tmp_path / "state") == [3, 4, 5, 6]
    assert [r.seq for r in store.outbox_next(10)] == [3]
    assert store.verify().ok


def test_retention_by_size_keeps_the_newest_acked_events(open_store, tmp_path):
    store = open_store(retention_bytes=3 * (ROW_OVERHEAD + 400))
    seqs = [store.append(ev(i, pad=150)).seq for i in range(10)]
    store.mark_acked(seqs)
    store.run_maintenance()
    kept = _seqs(tmp_path / "state")
    assert kept == seqs[-len(kept):] and 1 <= len(kept) <= 3
    assert store.verify().ok


def test_retention_runs_by_itself_under_steady_load(open_store, tmp_path):
    """Maintenance must not wait for the writer to be idle: a 1 event/s gate is never idle."""
    store = open_store(retention_hours=0, retention_bytes=0, maintenance_interval_s=0.2)
    def purged() -> bool:  # appends arrive more often than the maintenance interval
        store.mark_acked([store.append(ev()).seq])
        return store.stats()["purged_acked"] > 0

    wait_for(purged, 20, "acked events purged")
    assert store.verify().ok


def test_a_raising_listener_does_not_wedge_the_store(open_store):
    """The uplink is a listener: its bug must not stop every driver's appends."""
    store = open_store()
    calls: list[int] = []

    def broken(events):
        calls.append(len(events))
        raise ZeroDivisionError("listener bug")

    store.add_listener(broken)
    done = threading.Event()
    result: list = []
    threading.Thread(target=lambda: (result.append(store.append(ev(1)).seq), done.set()), daemon=True).start()
    assert done.wait(10), "append never returned: the writer thread died"
    assert result == [1]
    assert store.append(ev(2)).seq == 2 and calls == [1, 1]


def test_a_failing_batch_is_reported_to_its_callers_and_the_writer_lives_on(open_store):
    from edge.errors import StoreError
    from edge.store._writer import Job

    store = open_store()
    store.append(ev(1))

    def bug():
        raise KeyError("programming error inside a transaction")

    with pytest.raises(StoreError, match="could not write to the store"):
        store._writer.submit(Job(bug)).wait()
    assert store.append(ev(2)).seq == 2  # the failed batch was rolled back, nothing skipped
    assert store.verify().ok


def test_size_accounting_matches_the_file_on_disk(open_store, tmp_path):
    """The cap is only as good as the estimate: bytes_used must track the real file."""
    store = open_store()
    for start in range(0, 4000, 500):
        store.append_many([ev(i, type="turnstile.passage") for i in range(start, start + 500)])
    used = store.stats()["bytes_used"]
    store.close()
    with sqlite3.connect(tmp_path / "state" / "events.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
    assert 0.8 <= pages * size / used <= 1.2, (pages * size, used)


def test_a_failed_open_releases_the_state_dir(tmp_path, monkeypatch):
    from edge.errors import StoreError
    from edge.store import _recovery

    def busy(path):
        raise StoreError("cannot check the event store: disk I/O error")

    monkeypatch.setattr(_recovery, "check_integrity", busy)
    with pytest.raises(StoreError, match="disk I/O error"):
        Store(tmp_path / "state", device="dev-1", site="site-1")
    monkeypatch.undo()
    store = Store(tmp_path / "state", device="dev-1", site="site-1")  # not "in use by another process"
    store.close()


def assert_counts_exact(store) -> None:
    """stats() derives stored/pending from seq bounds and counters; they must equal real counts."""
    with sqlite3.connect(store.path) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    pending = len(store.outbox_next(1_000_000))  # what the uplink would still send
    stats = store.stats()
    assert (stats["stored"], stats["pending"]) == (stored, pending)


def test_stats_counts_match_real_counts_through_acks_purges_and_evictions(tmp_path):
    store = Store(tmp_path / "state", device="dev-1", site="site-1",
                  settings=StoreSettings(max_bytes=64 * 1024, retention_hours=0, retention_bytes=0))
    try:
        assert_counts_exact(store)
        seqs = [store.append(ev(i, priority=("normal", "telemetry", "alarm")[i % 3], pad=300)).seq
                for i in range(60)]
        assert_counts_exact(store)
        store.mark_acked(seqs[:10] + seqs[20:25])  # a prefix and a hole
        store.mark_acked(seqs[:5])  # duplicates change nothing
        assert_counts_exact(store)
        store.run_maintenance()  # purges the acked prefix
        assert_counts_exact(store)
        for i in range(150):  # past the cap: acked then telemetry then normal get evicted
            try:
                store.append(ev(i, priority=("normal", "telemetry", "alarm")[i % 3], pad=300))
            except Exception:
                pass
        assert_counts_exact(store)
        store.mark_acked([r.seq for r in store.outbox_next(40)])
        store.run_maintenance()
        assert_counts_exact(store)
    finally:
        store.close()
