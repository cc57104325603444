"""The drain's fast path: whole messages from SQLite (outbox_spans), the next read ahead (_spans)."""

from __future__ import annotations

import random

import pytest

from edge.config import StoreSettings
from edge.events import make_event
from edge.mqtt._batch import pack
from edge.mqtt._spans import SPANS_PER_READ, SpanReader
from edge.store import Store
from edge.store._acks import DEFER_MIN_ROWS


def _events(n: int, type_: str = "sim.beat", pad: int = 0):
    return [make_event(device="d", site="s", type=type_, source="t", payload={"n": i, "pad": "p" * pad})
            for i in range(n)]


@pytest.fixture
def store(tmp_path):
    st = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(maintenance_interval_s=3600))
    yield st
    st.close()


def _pending(store):
    """(seq, type, body, hash) of every pending event, the slow path's own rows."""
    return store.outbox_bodies(1_000_000)


def test_a_span_is_the_pending_bodies_joined_in_seq_order_with_the_last_hash(store):
    store.append_many(_events(30))
    store.mark_acked([3, 4, 9])  # small acks: rows updated at once, holes inside a span
    rows = {r[0]: r for r in _pending(store)}
    spans = store.outbox_spans(10, after_seq=0, count=3)
    assert [(s.first, s.last, s.count) for s in spans] == [(1, 10, 7), (11, 20, 10), (21, 30, 10)]
    for span in spans:
        inside = [rows[q] for q in range(span.first, span.last + 1) if q in rows]
        assert span.body == b",".join(r[2] for r in inside)
        assert span.hash == inside[-1][3] and span.family == "sim" and span.others == 0
    assert store.outbox_spans(10, after_seq=30) == []
    assert [s.first for s in store.outbox_spans(10, after_seq=2)] == [5]  # 3 and 4 are acked


def test_a_span_counts_its_events_of_another_family_than_the_first(store):
    types = ["sim.beat"] * 10 + ["sim.load", "simx.a", "si.x", "gate.pass", "sim.beat"] + ["gate.pass"] * 10
    store.append_many([e for t in types for e in _events(1, t)])
    spans = store.outbox_spans(5, after_seq=0, count=5)
    assert [(s.first, s.family, s.others) for s in spans] == [
        (1, "sim", 0), (6, "sim", 0), (11, "sim", 3), (16, "sim", 5), (21, "sim", 5)]
    assert [(s.family, s.others) for s in store.outbox_spans(5, after_seq=15, count=2)] == [("gate", 0)] * 2


def test_a_family_change_between_spans_is_read_whole_by_the_next_read(store):
    store.append_many(_events(20, "sim.beat") + _events(20, "gate.pass"))
    reader = _reader(store, max_events=10)
    first, cursor = reader.read(0)
    assert [(b.topic.rsplit("/", 1)[-1], b.span) for b in first] == [("sim", (1, 10)), ("sim", (11, 20))]
    second, cursor = reader.read(cursor)
    assert [(b.topic.rsplit("/", 1)[-1], b.span) for b in second] == [("gate", (21, 30)), ("gate", (31, 40))]
    assert reader.usable()  # no miss: the fast path does not rest
    reader.close()


def test_spans_stop_before_a_range_ack_and_go_on_after_it(store):
    n = DEFER_MIN_ROWS + 40
    store.append_many(_events(n))
    lo, hi = 21, 20 + DEFER_MIN_ROWS  # one range row, not folded into acked_at
    assert store.mark_acked_ranges([(lo, hi)]) == DEFER_MIN_ROWS
    first = store.outbox_spans(50, after_seq=0, count=2)
    assert [(s.first, s.last, s.count) for s in first] == [(1, 20, 20)]  # stops before the range
    after = store.outbox_spans(50, after_seq=20, count=1)
    assert [(s.first, s.last, s.count) for s in after] == [(hi + 1, hi + 20, 20)]  # jumps over it
    assert sum(s.count for s in first + after) == store.stats()["pending"]


def test_spans_agree_with_the_rows_over_random_acks(store):
    rng = random.Random(7)
    store.append_many(_events(600))
    store.mark_acked(rng.sample(range(1, 601), 150))
    store.mark_acked_ranges([(300, 300 + DEFER_MIN_ROWS)])  # past the end: a range row all the same
    want = [r[0] for r in _pending(store)]
    got, cursor = [], 0
    while spans := store.outbox_spans(rng.randint(1, 40), after_seq=cursor, count=rng.randint(1, 4)):
        for span in spans:
            got.append((span.first, span.last, span.count))
        cursor = spans[-1].last
    inside = [[q for q in want if lo <= q <= hi] for lo, hi, _n in got]
    assert [len(q) for q in inside] == [n for _lo, _hi, n in got]
    assert [q for part in inside for q in part] == want  # every pending event once, in order


def _reader(store, max_events=100, max_bytes=256 * 1024):
    return SpanReader(store, max_events, lambda: max_bytes, "s", "d")


def test_fast_path_messages_are_the_bytes_pack_builds(store):
    store.append_many(_events(1000))
    reader = _reader(store)
    batches, cursor = [], 0
    while (got := reader.read(cursor)) and got[0]:
        batches += got[0]
        cursor = got[1]
    reader.close()
    packed = pack(_pending(store), site="s", device="d", max_events=100, max_bytes=256 * 1024,
                  store_id=store.store_id)
    assert [(b.topic, b.payload, b.ranges, b.count) for b in batches] == [
        (b.topic, b.payload, b.ranges, b.count) for b in packed]


def test_big_events_make_smaller_messages_within_the_byte_cap(store):
    store.append_many(_events(300, pad=900))
    reader = _reader(store, max_events=100, max_bytes=16 * 1024)
    batches, cursor = [], 0
    while (got := reader.read(cursor)) and got[0]:
        batches += got[0]
        cursor = got[1]
    reader.close()
    assert all(len(b.payload) <= 16 * 1024 for b in batches)
    assert [b.ranges for b in batches] == [[(b.first, b.first + b.count - 1)] for b in batches]
    assert sum(b.count for b in batches) == 300 and batches[-1].span[1] == 300


def test_mixed_families_fall_back_to_rows_and_the_path_rests(store):
    store.append_many([e for i in range(50) for e in (_events(1, "sim.beat") + _events(1, "gate.pass"))])
    reader = _reader(store, max_events=10)
    assert reader.read(0) is None  # the caller reads these row by row
    assert not reader.usable() and not reader.usable()  # rests two reads after a first miss
    assert reader.usable()
    reader.close()


def test_the_read_ahead_is_protected_used_once_and_forgotten_on_rewind(store):
    store.append_many(_events(100))
    reader = _reader(store, max_events=10)
    first, cursor = reader.read(0)
    assert len(first) == SPANS_PER_READ and cursor == 40
    # The store must not drop what is being read ahead (the uplink holds what it read itself).
    assert reader.protected() == [(41, 40 + SPANS_PER_READ * 10)]
    ahead, cursor = reader.read(cursor)
    assert [b.first for b in ahead] == [41, 51, 61, 71] and cursor == 80
    reader.forget()  # a rewind: the read started after 80 is not used
    assert reader.protected() == []
    again, cursor = reader.read(0)
    assert [b.first for b in again] == [1, 11, 21, 31]
    reader.close()


def test_a_closed_reader_starts_no_read_ahead(store):
    store.append_many(_events(100))
    reader = _reader(store, max_events=10)
    reader.close()  # the uplink stopping while its thread still reads
    batches, cursor = reader.read(0)
    assert len(batches) == SPANS_PER_READ and reader.protected() == []  # nothing read ahead


def _pack_one_by_one(rows, max_events, max_bytes, envelope):
    """The packing rule, row by row: per family, a batch closes at max_events or before passing
    max_bytes (an event bigger than that goes alone); batches in order of their first seq."""
    open_, closed = {}, []
    for seq, type_, body, _digest in rows:
        family = type_.split(".")[0]
        cur = open_.setdefault(family, [[], envelope])
        if cur[0] and (len(cur[0]) >= max_events or cur[1] + len(body) + 1 > max_bytes):
            closed.append((family, cur[0]))
            cur = open_[family] = [[], envelope]
        cur[0].append(seq)
        cur[1] += len(body) + 1
    closed += [(family, cur[0]) for family, cur in open_.items()]
    return sorted(closed, key=lambda c: c[1][0])


def test_pack_agrees_with_the_rule_row_by_row_over_random_rows():
    rng = random.Random(11)
    for _trial in range(200):
        rows, seq = [], 0
        for _ in range(rng.randint(1, 300)):
            seq += rng.choice((1, 1, 1, 2, 7))
            type_ = rng.choice(("sim.beat", "sim.load", "gate.pass", "command.result", "a.b.c"))
            rows.append((seq, type_, b"x" * rng.choice((5, 40, 300, 2000)), bytes(32)))
        max_events, max_bytes = rng.randint(1, 60), rng.choice((600, 4000, 60_000))
        batches = pack(rows, site="s", device="d", max_events=max_events, max_bytes=max_bytes, store_id="st")
        envelope = len(b'{"store":"st","events":[') + len(b'],"chain":{"seq":%d,"hash":"%s"}}') + 20 + 64
        want = _pack_one_by_one(rows, max_events, max_bytes, envelope)
        assert [(b.topic.rsplit("/", 1)[-1], b.seqs) for b in batches] == [
            ("result" if f == "command" else f, s) for f, s in want]
        bodies = dict((r[0], r[2]) for r in rows)
        assert all(b'"events":[' + b",".join(bodies[q] for q in b.seqs) + b"]" in b.payload for b in batches)
