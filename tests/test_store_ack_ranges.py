"""Big acks recorded as seq ranges and folded into acked_at later (edge/store/_acks.py)."""

from __future__ import annotations

import sqlite3

import pytest

from edge.config import StoreSettings
from edge.events import make_event
from edge.store import Store, StoreReader
from edge.store._acks import DEFER_MIN_ROWS, uncovered


def _events(n: int, priority: str = "normal"):
    return [make_event(device="d", site="s", type="sim.beat", source="t", payload={"n": i}, priority=priority)
            for i in range(n)]


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path / "state", device="d", site="s",
               settings=StoreSettings(maintenance_interval_s=3600))
    yield st
    st.close()


def _raw(store, sql, *args):
    db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_uncovered_parts_of_a_range():
    ranges = [(10, 19, 0.0), (30, 39, 0.0)]
    assert list(uncovered(ranges, 1, 50)) == [(1, 9), (20, 29), (40, 50)]
    assert list(uncovered(ranges, 12, 15)) == []
    assert list(uncovered(ranges, 15, 35)) == [(20, 29)]
    assert list(uncovered([], 3, 4)) == [(3, 4)]


def test_a_big_ack_is_a_range_and_every_reader_sees_it_acked(store):
    n = DEFER_MIN_ROWS + 500
    seqs = [e.seq for e in store.append_many(_events(n))]
    assert store.mark_acked(seqs[:-10]) == n - 10
    assert _raw(store, "SELECT COUNT(*) FROM acked_ranges")[0][0] >= 1  # recorded as a range...
    assert _raw(store, "SELECT COUNT(*) FROM events WHERE acked_at IS NOT NULL")[0][0] == 0  # ...not folded
    assert [r[0] for r in store.outbox_bodies(100)] == seqs[-10:]
    assert [r.seq for r in store.outbox_next(100)] == seqs[-10:]
    stats = store.stats()
    assert stats["pending"] == 10 and stats["oldest_pending_seq"] == seqs[-10]
    assert stats["acked_total"] == n - 10
    shown = {seq: acked_at for seq, _body, acked_at in store.tail(n)}  # tail shows them acked
    assert all(shown[s] is not None for s in seqs[:-10]) and all(shown[s] is None for s in seqs[-10:])
    reader = StoreReader(store.state_dir)  # another process's read-only view agrees
    try:
        assert reader.stats()["pending"] == 10 and len(reader.outbox_bodies(1000)) == 10
    finally:
        reader.close()
    assert store.mark_acked(seqs) == 10  # duplicates of ranged acks are not counted twice
    assert store.stats()["pending"] == 0


def test_small_acks_update_at_once(store):
    seqs = [e.seq for e in store.append_many(_events(20))]
    assert store.mark_acked(seqs[:5]) == 5
    assert _raw(store, "SELECT COUNT(*) FROM events WHERE acked_at IS NOT NULL")[0][0] == 5
    assert _raw(store, "SELECT COUNT(*) FROM acked_ranges")[0][0] == 0


def test_maintenance_folds_ranges_into_acked_at_and_they_survive_a_restart(tmp_path):
    settings = StoreSettings(maintenance_interval_s=3600)
    st = Store(tmp_path / "state", device="d", site="s", settings=settings)
    seqs = [e.seq for e in st.append_many(_events(DEFER_MIN_ROWS * 2))]
    st.mark_acked(seqs)
    st.close()
    st = Store(tmp_path / "state", device="d", site="s", settings=settings)  # restart: still acked
    try:
        assert st.stats()["pending"] == 0 and st.outbox_bodies(10) == []
        st.run_maintenance()
        assert _raw(st, "SELECT COUNT(*) FROM acked_ranges")[0][0] == 0
        assert _raw(st, "SELECT COUNT(*) FROM events WHERE acked_at IS NULL")[0][0] == 0
        assert st.verify().ok
    finally:
        st.close()


def test_eviction_sees_range_acks_as_acked_history(tmp_path):
    """When full, acked history goes first, even if its acks are not folded yet."""
    settings = StoreSettings(max_bytes=2_000_000, retention_bytes=10_000_000, maintenance_interval_s=3600)
    st = Store(tmp_path / "state", device="d", site="s", settings=settings)
    try:
        first = [e.seq for e in st.append_many(_events(DEFER_MIN_ROWS + 1000, priority="telemetry"))]
        st.mark_acked(first)
        while st.stats()["bytes_used"] < 1_900_000:
            st.append_many(_events(500, priority="telemetry"))
        st.append_many(_events(2000, priority="telemetry"))  # over the cap: something must go
        stats = st.stats()
        assert stats["dropped"]["telemetry"] == 0, "pending telemetry went before acked history"
        assert stats["purged_acked"] > 0
    finally:
        st.close()


def test_random_acks_and_folds_agree_with_a_model(tmp_path, monkeypatch):
    """Overlapping, duplicate, small and ranged acks and partial folds: pending is exact."""
    import random

    from edge.store import _acks
    from edge.store._writer import Job

    monkeypatch.setattr(_acks, "DEFER_MIN_ROWS", 8)  # exercise both paths on a small store
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    st = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(maintenance_interval_s=3600))
    try:
        seqs = [e.seq for e in st.append_many(_events(300))]
        pending = set(seqs)
        for step in range(80):
            if rng.random() < 0.2:
                budget = rng.choice([1, 5, 20, None])
                st._writer.submit(Job(lambda b=budget: st._acks.fold(b))).wait()
            else:
                lo = rng.choice(seqs)
                chosen = [s for s in range(lo, lo + rng.randint(1, 40)) if s in seqs]
                chosen += rng.sample(seqs, rng.randint(0, 3))  # stragglers and duplicates
                assert st.mark_acked(chosen) == len(pending & set(chosen)), f"seed {seed} step {step}"
                pending -= set(chosen)
            assert [r[0] for r in st.outbox_bodies(1000)] == sorted(pending), f"seed {seed} step {step}"
            stats = st.stats()
            assert stats["pending"] == len(pending), f"seed {seed} step {step}"
            assert stats["oldest_pending_seq"] == (min(pending) if pending else None)
            if rng.random() < 0.1:
                assert [r[0] for r in st.outbox_bodies(7, after_seq=100)] == sorted(
                    s for s in pending if s > 100)[:7]
        st.run_maintenance()  # folds everything: acked_at now says the same
        acked_rows = {r[0] for r in _raw(st, "SELECT seq FROM events WHERE acked_at IS NOT NULL")}
        assert acked_rows == set(seqs) - pending
    finally:
        st.close()
