"""A compromised device against the central ingest: the real `edge central ingest`, a real
mosquitto, SQLite and PostgreSQL.

The attacker holds one device's certificate, so the broker's ACL lets it publish only on its
own topics (tests/security/test_broker_acl.py proves that part); everything here is published
on those topics. What it sends must be refused message by message, with the reason kept in
`rejects`, while every other device's events (and the attacker's own valid ones: the positive
control) are stored. Before the fix, one message stopped the whole ingest: a deep array killed
the writer thread (RecursionError), a seq of 2**63 or a lone surrogate did the same on SQLite,
and NaN, a NUL character or a 3000-character id made PostgreSQL refuse the batch, retried
forever with every other device's messages behind it.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid

import pytest

from edge.testing.central import Publisher, db_url, event
from edge.testing.wait import wait_for
from services.central.db import open_db

SITE, EVIL, GOOD = "site-1", "tab-evil", "gate-1"
EVIL_EVENTS = f"edge/v1/{SITE}/{EVIL}/events/sim"
EVIL_STATE = f"edge/v1/{SITE}/{EVIL}/state"
LIMIT = 256 * 1024  # --max-message-bytes for these tests


def _raw_event(seq: int, **fields) -> str:
    """One event of the attacker's device as JSON text, with ``fields`` spliced in verbatim."""
    ev = {"v": 1, "id": str(uuid.uuid4()), "device": EVIL, "site": SITE, "seq": seq,
          "ts": "2026-01-01T00:00:00.000Z", "type": "sim.heartbeat", "source": "x", "payload": {}}
    body = json.dumps(ev)[:-1]
    for key, text in fields.items():
        body = body.replace(f'"{key}": {json.dumps(ev[key])}', f'"{key}": {text}') if key in ev \
            else body + f', "{key}": {text}'
    return body + "}"


def _batch(*events: str) -> bytes:
    return ('{"events": [' + ", ".join(events) + "]}").encode()


def _state(**fields) -> bytes:
    doc = {"online": True, "device": EVIL, "site": SITE, "role": "tablet", "version": "0.1.0", "boot_seq": 1,
           "started_at": "2026-01-01T00:00:00Z"}
    return json.dumps({**doc, **fields}).encode()


# (what, topic, payload, what the reject's reason must say)
HOSTILE = [
    ("deep nesting", EVIL_EVENTS, b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
    ("deep but parseable", EVIL_EVENTS, _batch(_raw_event(1, payload='{"a": ' * 100 + "1" + "}" * 100)),
     "nested deeper than 64"),
    ("seq 2**63", EVIL_EVENTS, _batch(_raw_event(2**63)), "from 1 to 9223372036854775807"),
    ("negative seq", EVIL_EVENTS, _batch(_raw_event(-5)), "events[0].seq"),
    ("NaN", EVIL_EVENTS, _batch(_raw_event(2, payload='{"x": NaN}')), "NaN is not a JSON number"),
    ("1e999", EVIL_EVENTS, _batch(_raw_event(3, payload='{"x": 1e999}')), "finite number"),
    ("huge integer", EVIL_EVENTS, _batch(_raw_event(4, payload='{"x": ' + "9" * 5000 + "}")), "digits"),
    ("lone surrogate id", EVIL_EVENTS, _batch(_raw_event(5, id='"\\ud800"')), "events[0].id: holds a lone"),
    ("lone surrogate key", EVIL_EVENTS, _batch(_raw_event(6, payload='{"\\udc00": 1}')), "surrogate"),
    ("NUL in type", EVIL_EVENTS, _batch(_raw_event(7, type='"a\\u0000b"')), "NUL"),
    ("NUL in payload", EVIL_EVENTS, _batch(_raw_event(8, payload='{"x": "\\u0000"}')), "NUL"),
    ("invalid UTF-8", EVIL_EVENTS, _batch(_raw_event(9, source='"\xff"')).replace("\xff".encode(), b"\xff"),
     "not UTF-8"),
    ("duplicate keys", EVIL_EVENTS, _batch(_raw_event(10, priority="\"normal\", \"seq\": 11")), "duplicate key 'seq'"),
    ("ts overflows UTC", EVIL_EVENTS, _batch(_raw_event(12, ts='"9999-12-31T23:59:59-01:00"')), "out of range"),
    ("ts before year 1", EVIL_EVENTS, _batch(_raw_event(13, ts='"0001-01-01T00:00:00+01:00"')), "out of range"),
    ("store an object", EVIL_EVENTS, _batch(_raw_event(14, store='{"a": 1}')), "events[0].store"),
    ("id too long for an index", EVIL_EVENTS, _batch(_raw_event(15, id=json.dumps(secrets.token_hex(1500)))),
     "at most 256 characters"),
    ("oversize message", EVIL_EVENTS, _batch(_raw_event(16, payload=json.dumps({"x": "a" * LIMIT}))),
     "over the ingest's limit"),
    ("boot_seq 2**63", EVIL_STATE, _state(boot_seq=2**63), "state.boot_seq"),
    ("role an object", EVIL_STATE, _state(role={"a": 1}), "state.role"),
]


def _good(pub: Publisher, first: int, n: int) -> None:
    pub.batch(SITE, GOOD, [event(GOOD, SITE, s) for s in range(first, first + n)])


def _seqs(db, device: str) -> list[int]:
    return [r[0] for r in db.query("SELECT seq FROM events WHERE device = %s ORDER BY seq", (device,))]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_hostile_messages_are_refused_one_by_one_and_every_device_keeps_being_served(
        kind, mosquitto, tmp_path, request, ingest_factory):
    url = db_url(kind, tmp_path, request)
    # A long linger puts the hostile messages in the same transactions as the good ones.
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "300",
                            "--max-message-bytes", str(LIMIT)).start()
    pub = Publisher(mosquitto.port)
    _good(pub, 1, 3)
    for _what, topic, payload, _reason in HOSTILE:
        pub.send(topic, payload, retain=topic == EVIL_STATE)
    _good(pub, 4, 3)
    # Positive control on the attacker's own topic: a valid event and a valid birth still count.
    pub.send(EVIL_EVENTS, _batch(_raw_event(1)))
    pub.send(EVIL_STATE, _state(boot_seq=2), retain=True)
    # A far-future time in UTC is stored (a moved clock still sends evidence), not refused.
    pub.send(EVIL_EVENTS, _batch(_raw_event(2, ts='"9999-12-31T23:59:59.999Z"')))
    db = open_db(url)
    wait_for(lambda: len(_seqs(db, GOOD)) == 6 and _seqs(db, EVIL) == [1, 2]
             and db.query("SELECT COUNT(*) FROM rejects")[0][0] == len(HOSTILE), 60,
             "the good events stored and every hostile message kept as a reject")
    assert _seqs(db, GOOD) == [1, 2, 3, 4, 5, 6]
    rejects = {bytes(p): r for r, p in db.query("SELECT reason, payload FROM rejects")}
    for what, _topic, payload, reason in HOSTILE:
        kept = payload[:64 * 1024] if len(payload) > LIMIT else payload
        assert kept in rejects, f"{what}: no reject kept with its payload"
        assert reason in rejects[kept], f"{what}: reason {rejects[kept]!r} does not say {reason!r}"
    assert db.devices()[-1]["device"] == EVIL and db.devices()[-1]["boot_seq"] == 2
    assert ingest.proc.poll() is None, "the ingest must still run"
    log = ingest.log.read_text()
    assert "central_writer_fault" not in log and "central_db_write_failed" not in log
    _good(pub, 7, 1)  # and it still takes new work
    wait_for(lambda: _seqs(db, GOOD)[-1:] == [7], 30, "a later event stored")
    assert ingest.stop() == 0
    pub.close()
    db.close()


def _refuse_type_in_db(kind: str, url: str, type_: str) -> None:
    """A database rule the parser does not know: rows of ``type_`` are refused by a trigger."""
    if kind == "sqlite":
        open_db(url).query(f"CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.type = '{type_}' "
                           "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END")
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     f"IF NEW.type = '{type_}' THEN RAISE EXCEPTION 'refused by the test trigger' "
                     "USING ERRCODE = '22023'; END IF; RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse()")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_message_the_database_refuses_is_isolated_and_the_rest_of_its_batch_stored(
        kind, mosquitto, tmp_path, request, ingest_factory):
    """Defence in depth: whatever the parser lets through and the database refuses for its
    content is found by splitting the batch, kept as a reject with the database's reason, and
    the messages around it are stored; before, the whole batch was retried forever."""
    url = db_url(kind, tmp_path, request)
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "300").start()
    _refuse_type_in_db(kind, url, "evil.poison")
    pub = Publisher(mosquitto.port)
    _good(pub, 1, 2)
    pub.send(EVIL_EVENTS, _batch(_raw_event(1, type='"evil.poison"')))
    _good(pub, 3, 2)
    pub.send(EVIL_EVENTS, _batch(_raw_event(2)))  # positive control: the attacker's valid event
    db = open_db(url)
    wait_for(lambda: len(_seqs(db, GOOD)) == 4 and db.query("SELECT COUNT(*) FROM rejects")[0][0] == 1,
             60, "the batch split, the good events stored, the poison kept")
    assert _seqs(db, GOOD) == [1, 2, 3, 4] and _seqs(db, EVIL) == [2]
    reason, topic = db.query("SELECT reason, topic FROM rejects")[0]
    assert topic == EVIL_EVENTS and "the database refused it" in reason and "test trigger" in reason
    assert ingest.proc.poll() is None and "central_db_write_failed" not in ingest.log.read_text()
    assert ingest.stop() == 0
    pub.close()
    db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_another_devices_ids_seqs_and_identity_cannot_suppress_its_events(
        kind, mosquitto, tmp_path, request, ingest_factory):
    """The attacker learns (or guesses) event ids the gate will use and sends them first under its
    own name; it also claims to be the gate inside the envelope. Before, the id alone was the key:
    the gate's genuine events were counted as duplicates, acknowledged and never stored."""
    url = db_url(kind, tmp_path, request)
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "0").start()
    pub = Publisher(mosquitto.port)
    genuine = [event(GOOD, SITE, s) for s in (1, 2, 3)]
    # Same ids, the attacker's own device and topic: valid for it, so stored as ITS events.
    pub.send(EVIL_EVENTS, _batch(*(_raw_event(i + 1, id=json.dumps(e["id"])) for i, e in enumerate(genuine))))
    # The gate's identity (and its next seqs) in the envelope, on the attacker's topic: refused.
    forged = {**event(GOOD, SITE, 4), "store": ""}
    pub.send(EVIL_EVENTS, json.dumps({"events": [forged]}).encode())
    pub.send(EVIL_STATE, json.dumps({"online": False, "device": GOOD, "site": SITE, "role": "gate",
                                     "version": "0", "boot_seq": 99, "started_at": "2026-01-01T00:00:00Z",
                                     "reason": "shutdown"}).encode())
    db = open_db(url)
    wait_for(lambda: len(_seqs(db, EVIL)) == 3 and db.query("SELECT COUNT(*) FROM rejects")[0][0] == 2,
             30, "the attacker's messages handled")
    pub.batch(SITE, GOOD, genuine)
    pub.batch(SITE, GOOD, [{**event(GOOD, SITE, 4), "id": forged["id"]}])
    pub.batch(SITE, GOOD, genuine[:1])  # a redelivery of the gate's own: still a duplicate
    wait_for(lambda: len(_seqs(db, GOOD)) == 4, 30, "the gate's genuine events stored")
    rows = db.query("SELECT id, seq FROM events WHERE device = %s ORDER BY seq", (GOOD,))
    assert [(r[0], r[1]) for r in rows] == [(e["id"], e["seq"]) for e in genuine] + [(forged["id"], 4)]
    assert db.gaps(GOOD) == []
    reasons = [r[0] for r in db.query("SELECT reason FROM rejects ORDER BY n")]
    assert all("do not match the topic" in r for r in reasons), reasons
    assert not [d for d in db.devices() if d["device"] == GOOD and d["online"] is False]
    time.sleep(0.5)  # the redelivery is absorbed, not stored twice
    assert len(_seqs(db, GOOD)) == 4
    assert ingest.stop() == 0
    pub.close()
    db.close()


def test_an_old_database_keeps_its_events_through_the_per_device_id_migration(tmp_path):
    from services.central import _migrate

    db = open_db(str(tmp_path / "old.db"))
    conn = db._conn
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at TEXT NOT NULL)")
    for version, name, sql in _migrate.migration_files("sqlite")[:2]:
        for stmt in _migrate.statements(sql):
            conn.execute(stmt)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 'x')", (version, name))
    conn.execute("INSERT INTO events VALUES ('id-1', 'gate-1', 's', '', 1, 't', 'normal', 'ts', 'r', '{}')")
    assert db.migrate() == ["0003_event_id_per_device.sql"]
    assert db.query("SELECT id, device, seq FROM events") == [("id-1", "gate-1", 1)]
    conn.execute("INSERT INTO events VALUES ('id-1', 'tab-1', 's', '', 1, 't', 'normal', 'ts', 'r', '{}')")
    assert db.query("SELECT COUNT(*) FROM events")[0][0] == 2


def test_a_qos0_flood_is_dropped_before_it_queues_and_other_devices_are_served(
        mosquitto, tmp_path, ingest_factory):
    """Receive Maximum bounds only QoS 1 deliveries: a device publishing QoS 0 as fast as it can
    filled the ingest's unbounded queue and a write per message, ahead of every other device.
    Every device channel is QoS 1, so QoS 0 is counted and dropped on arrival."""
    import urllib.request

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.testing.broker import free_port

    port = free_port()
    url = str(tmp_path / "central.db")
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--metrics-listen", f"127.0.0.1:{port}").start()
    flood = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="evil-flood", protocol=mqtt.MQTTv5)
    flood.max_queued_messages_set(0)
    flood.connect("127.0.0.1", mosquitto.port)
    flood.loop_start()
    for seq in range(1, 5001):
        flood.publish(EVIL_EVENTS, _batch(_raw_event(seq)), qos=0)
    pub = Publisher(mosquitto.port)
    _good(pub, 1, 3)
    pub.send(EVIL_EVENTS, _batch(_raw_event(9000)))  # positive control: the same device at QoS 1
    db = open_db(url)
    wait_for(lambda: _seqs(db, GOOD) == [1, 2, 3] and _seqs(db, EVIL) == [9000], 60,
             "the gate's events and the attacker's QoS 1 event stored")

    def dropped() -> int:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        return int(next(line.split()[1] for line in text.splitlines()
                        if line.startswith("edge_central_dropped_qos0_total ")))

    wait_for(lambda: dropped() > 0, 30, "the dropped QoS 0 messages counted")
    assert _seqs(db, EVIL) == [9000] and ingest.proc.poll() is None
    assert "central_qos0_dropped" in ingest.log.read_text()
    flood.disconnect()
    flood.loop_stop()
    assert ingest.stop() == 0
    pub.close()
    db.close()


def test_a_future_dated_event_does_not_hide_the_lag():
    from datetime import UTC, datetime, timedelta

    from services.central._parse import Parsed, parse_into

    now = datetime.now(UTC)
    late = (now - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    out = Parsed()
    parse_into(out, EVIL_EVENTS, _batch(_raw_event(1, ts='"9999-12-31T23:59:59Z"'),
                                        _raw_event(2, ts=json.dumps(late))), now)
    assert not out.rejects and len(out.events) == 2
    assert out.newest_ts is not None and (now - out.newest_ts) >= timedelta(minutes=5)
