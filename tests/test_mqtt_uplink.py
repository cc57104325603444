"""The uplink against a real mosquitto: order, batch envelopes, acks only on PUBACK, wake-up."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest

from edge.config import Settings
from edge.events import canonical_json, make_event
from edge.mqtt import MqttLink
from edge.mqtt.uplink import pack
from edge.store import Store
from edge.testing.wait import wait_for


def _flushed(link, store) -> bool:
    """Nothing pending once the acker has committed what it holds."""
    link.uplink.acker.flush(1)
    return store.stats()["pending"] == 0


def _event(type_: str, n: int, pad: int = 0):
    payload = {"n": n, **({"pad": "p" * pad} if pad else {})}
    return make_event(device="dev-1", site="site-1", type=type_, source="test", payload=payload)


@pytest.fixture
def rig(base_config, tmp_path, mosquitto):
    """A real store and a link to a real broker, without the daemon around them."""
    made = []

    def make(start: bool = True, **mqtt):
        cfg = {**base_config, "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.05,
                                        "backoff_max_s": 0.5, **mqtt}}
        settings = Settings(**cfg)
        store = Store(settings.state_dir, device="dev-1", site="site-1", settings=settings.store)
        link = MqttLink(settings, store, device_state=False)
        made.append((link, store))
        if start:
            link.start()
            assert link.wait_connected(10)
        return link, store

    yield make
    for link, store in made:
        link.stop()
        store.close()


def test_pack_joins_stored_bytes_per_family_in_seq_order():
    def Row(seq, type_, body):
        return (seq, type_, body, bytes([seq]) * 32)

    rows = [Row(1, "a.x", b'{"seq":1}'), Row(2, "b.x", b'{"seq":2}'), Row(3, "a.y", b'{"seq":3}'),
            Row(4, "command.result", b'{"seq":4}'), Row(5, "a.x", b'{"seq":5}')]
    batches = pack(rows, site="s", device="d", max_events=2, max_bytes=10_000)
    by_topic = [(b.topic, b.seqs) for b in batches]
    assert by_topic == [("edge/v1/s/d/events/a", [1, 3]), ("edge/v1/s/d/events/b", [2]),
                        ("edge/v1/s/d/cmd/result", [4]), ("edge/v1/s/d/events/a", [5])]
    assert batches[0].payload == (b'{"events":[{"seq":1},{"seq":3}],"chain":{"seq":3,"hash":"'
                                  + (b"03" * 32) + b'"}}')
    # Byte cap: each batch fits, and an event bigger than the cap still goes, alone.
    big = [Row(i, "a.x", b"{" + b"x" * 40 + b"}") for i in range(1, 6)]
    sized = pack(big, site="s", device="d", max_events=100, max_bytes=250)
    assert all(len(b.payload) <= 250 for b in sized) and sum(len(b.seqs) for b in sized) == 5
    assert len(sized) > 1
    assert [len(b.seqs) for b in pack(big, site="s", device="d", max_events=100, max_bytes=10)] == [1] * 5


def test_delivers_every_event_in_seq_order_in_family_batches(rig, mosquitto, mqtt_collector):
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/#")
    link, store = rig(batch_max_events=50, batch_max_bytes=8 * 1024)
    families = ["turnstile.passage", "biometric.match", "system.note", "command.result"]
    stored = store.append_many([_event(families[i % 4], i, pad=i % 7 * 20) for i in range(1000)])
    want = {e.seq for e in stored}
    collector.wait_for(lambda c: want <= {e["seq"] for m in c.messages for e in m.json()["events"]},
                       timeout=20, what="all 1000 events")
    last_seq: dict[str, int] = {}
    for msg in collector.messages:
        events = msg.json()["events"]
        assert 1 <= len(events) <= 50 and len(msg.payload) <= 8 * 1024
        kinds = {e["type"].split(".")[0] for e in events}
        assert len(kinds) == 1, f"one family per batch, got {kinds} on {msg.topic}"
        family = kinds.pop()
        expected_topic = ("edge/v1/site-1/dev-1/cmd/result" if family == "command"
                          else f"edge/v1/site-1/dev-1/events/{family}")
        assert msg.topic == expected_topic
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and seqs[0] > last_seq.get(msg.topic, 0), "seq order per family"
        last_seq[msg.topic] = seqs[-1]
    # The payload is the stored canonical bytes, joined: nothing re-serialised.
    first = collector.messages[0]
    assert first.payload.startswith(b'{"store":"%s","events":[' % store.store_id.encode() + b",".join(
        canonical_json(e) for e in first.json()["events"]) + b'],"chain":{')
    # Central can check the chain from what it received: every batch's head is the hash chain
    # over every event's bytes, in seq order across families.
    bodies = {e["seq"]: canonical_json(e) for m in collector.messages for e in m.json()["events"]}
    heads = {m.json()["chain"]["seq"]: m.json()["chain"]["hash"] for m in collector.messages}
    prev, checked = bytes(32), 0
    for seq in sorted(bodies):
        prev = hashlib.sha256(prev + bodies[seq]).digest()
        if seq in heads:
            assert heads[seq] == prev.hex(), seq
            checked += 1
    assert checked == len(heads) > 1
    link.uplink.acker.flush()
    assert store.stats()["pending"] == 0


def test_events_are_acked_only_when_the_broker_pubacks(rig, mosquitto):
    link, store = rig()
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the broker reads nothing, acks nothing
    try:
        store.append_many([_event("sim.beat", i) for i in range(200)])
        wait_for(lambda: link.uplink.status()["sent_events"] >= 200, 10, "200 events sent", interval=0.01)
        assert link.uplink.status()["sent_events"] == 200  # published, in flight...
        assert store.stats()["pending"] == 200  # ...but nothing is acked without a PUBACK
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    wait_for(lambda: _flushed(link, store), 10, "every event acked", interval=0)
    assert link.status()["last_puback_at"] is not None


def test_wakes_within_milliseconds_of_an_append_and_batches_under_load(rig, mosquitto, mqtt_collector):
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#")
    link, store = rig()
    latencies = []
    for i in range(5):
        t0 = time.monotonic()
        store.append(_event("sim.beat", i))
        collector.wait_for(lambda c, n=i + 1: len(c.messages) >= n, timeout=5)
        latencies.append(collector.messages[-1].at - t0)
    # One event, idle uplink: it goes at once (the append itself includes an fsync).
    assert sorted(latencies)[2] < 0.25, latencies
    before = len(collector.messages)
    store.append_many([_event("sim.beat", i) for i in range(3000)])
    collector.wait_for(lambda c: len(c.events()) >= 3005, timeout=20)
    assert len(collector.messages) - before <= 3000 / 100, "under load events travel in batches"


def test_reconnect_resends_everything_not_acked(rig, mosquitto, mqtt_collector):
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#")
    link, store = rig()
    mosquitto.stop()
    stored = store.append_many([_event("sim.beat", i) for i in range(500)])
    assert store.stats()["pending"] == 500
    mosquitto.start()
    want = {e.id for e in stored}
    collector.wait_for(lambda c: want <= {e["id"] for e in c.events()}, timeout=20, what="resent events")
    link.uplink.acker.flush()
    wait_for(lambda: _flushed(link, store), 10, "every event acked", interval=0)
    assert json.loads(json.dumps(link.status()))["connects"] >= 2


def test_a_backlog_goes_whole_from_sqlite_read_ahead_and_acked_only_on_puback(rig, mosquitto, mqtt_collector,
                                                                               monkeypatch):
    """One family (the fast path, read ahead), families interleaved (row by row), then events too
    big for max_events under the byte cap (smaller messages): every event arrives, in the same
    envelopes, and none is marked sent before its PUBACK."""
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/#")
    link, store = rig(batch_max_events=100, batch_max_bytes=16 * 1024)
    readers = []
    spans = store.outbox_spans
    monkeypatch.setattr(store, "outbox_spans", lambda *a, **k: readers.append(
        threading.current_thread().name) or spans(*a, **k))
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)
    try:
        stored = store.append_many([_event("sim.beat", i) for i in range(3000)])
        stored += store.append_many([_event(("gate.pass", "sim.beat")[i % 2], i) for i in range(300)])
        stored += store.append_many([_event("sim.beat", i, pad=900) for i in range(300)])
        wait_for(lambda: link.uplink.status()["inflight_messages"] >= 32, 10, "a full window sent", interval=0.01)
        assert link.uplink.status()["inflight_messages"] == 32  # a full window sent...
        assert store.stats()["pending"] == 3600  # ...and nothing acked without a PUBACK
    finally:
        os.kill(mosquitto.proc.pid, signal.SIGCONT)
    want = {e.id for e in stored}
    collector.wait_for(lambda c: want <= {e["id"] for e in c.events()}, timeout=30, what="the backlog")
    assert any(name.startswith("mqtt-read-ahead") for name in readers), "the next read ran ahead"
    last_seq: dict[str, int] = {}
    for msg in collector.messages:
        events = msg.json()["events"]
        assert 1 <= len(events) <= 100 and len(msg.payload) <= 16 * 1024
        assert len({e["type"].split(".")[0] for e in events}) == 1
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and seqs[0] > last_seq.get(msg.topic, 0)
        last_seq[msg.topic] = seqs[-1]
        assert msg.payload == (b'{"store":"%s","events":[' % store.store_id.encode()
                               + b",".join(canonical_json(e) for e in events)
                               + b'],"chain":{"seq":%d,"hash":"%s"}}' % (seqs[-1], msg.json()["chain"]["hash"].encode()))
    assert sum(len(m.json()["events"]) for m in collector.messages) == len(want)  # each once: no resend here
    wait_for(lambda: _flushed(link, store), 10, "every event acked", interval=0)


def test_what_the_store_may_drop_never_includes_acked_or_read_events(rig):
    """An event the broker has acknowledged is delivered until its ack is committed, and a
    row being read may be published any moment: ``protected_ranges`` (what the store must not
    drop as never sent when it makes room) holds both, and lets them go once done."""
    link, store = rig(start=False)
    uplink, acker = link.uplink, link.uplink.acker
    inside, release = threading.Event(), threading.Event()
    commit = store.mark_acked_ranges

    def slow_commit(ranges):
        inside.set()
        release.wait(10)
        return commit(ranges)

    store.mark_acked_ranges = slow_commit
    for i in range(30):
        store.append(_event("sim.x", i))
    acker.start()
    try:
        acker.add([(1, 10)], [12, 13, 15])  # PUBACKs in: the acker commits them, slowly
        assert inside.wait(5)
        acker.add([(20, 22)])  # more while that commit runs
        held = uplink.protected_ranges()
        for lo, hi in ((1, 10), (12, 13), (15, 15), (20, 22)):
            assert any(a <= lo and hi <= b for a, b in held), (lo, hi, held)
        assert not any(a <= 25 <= b for a, b in held), held  # nothing else: no event sent

        uplink._reading = 26  # a read from the cursor in progress: everything after it
        assert any(a <= 26 and b >= 10**12 for a, b in uplink.protected_ranges())
        uplink._reading = None
    finally:
        release.set()
    assert acker.flush(5)
    assert uplink.protected_ranges() == []  # committed acked: the store may purge them as history
    assert store.stats()["pending"] == 30 - 16


def test_events_in_flight_when_the_connection_drops_are_never_called_unsent(rig, mosquitto):
    """A message the broker may have taken before the connection broke (no PUBACK came) is
    not "never sent": while the uplink waits to send it again, the store may not drop it as
    such; once it is sent again and acknowledged, nothing is held."""
    link, store = rig()
    uplink = link.uplink
    os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # takes the messages, acknowledges none
    stored = store.append_many([_event("sim.beat", i) for i in range(50)])
    wait_for(lambda: uplink.status()["sent_events"] >= 50, 10, "50 events in flight", interval=0.01)
    mosquitto.stop(kill=True)  # the connection ends with no PUBACK
    wait_for(lambda: not link.connected and uplink.status()["inflight_messages"] == 0, 10, "the uplink rewound")
    held = uplink.protected_ranges()
    assert all(any(lo <= e.seq <= hi for lo, hi in held) for e in stored), held
    assert store.stats()["pending"] == 50

    mosquitto.start()  # a fresh broker (the killed one kept nothing): acks come from the events sent again
    wait_for(lambda: _flushed(link, store), 20, "every event sent again and acked", interval=0.05)
    assert uplink.status()["sent_events"] >= 100  # each of the 50 published twice
    assert uplink.protected_ranges() == []
