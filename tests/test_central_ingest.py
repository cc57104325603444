"""The reference central ingest against a real mosquitto and a real database (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from edge.testing.broker import free_port
from edge.testing.central import Publisher, db_url, event
from edge.testing.wait import wait_for
from services.central.db import open_db

SITE = "site-1"


def _seqs(db, device: str) -> list[int]:
    return [r[0] for r in db.query("SELECT seq FROM events WHERE device = %s ORDER BY seq", (device,))]


def _count(db) -> int:
    return db.query("SELECT COUNT(*) FROM events")[0][0]


def central(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "central", *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_consumer_killed_mid_batch_loses_no_event(kind, mosquitto, tmp_path, request, ingest_factory):
    """SIGKILL while a batch is received but not committed: after a restart every (device, seq) is
    in the database exactly once, including what arrived while the consumer was down."""
    url = db_url(kind, tmp_path, request)
    # A long linger holds a received batch uncommitted (and unacknowledged) for 1.5 s: the kill lands there.
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "1500", "--batch-max", "100000").start()
    pub = Publisher(mosquitto.port)
    devices = [f"dev-{i}" for i in range(3)]
    seq = dict.fromkeys(devices, 0)

    def wave(messages: int, per: int = 20) -> None:
        for _ in range(messages):
            for d in devices:
                pub.batch(SITE, d, [event(d, SITE, seq[d] + k + 1) for k in range(per)])
                seq[d] += per

    db = open_db(url)
    wave(2)
    wait_for(lambda: db.migrate() is not None and _count(db) == 120, 30, "the first wave committed")
    wave(5)  # delivered to the consumer (PUBACKed by the broker), held in its 1.5 s linger
    ingest.kill()
    assert _count(db) == 120, "the second wave must not have been committed before the kill"
    wave(3)  # while the consumer is down: queued in its persistent session
    ingest.start()
    total = sum(seq.values())
    wait_for(lambda: _count(db) >= total, 60, f"all {total} events after the restart")
    for d in devices:
        assert _seqs(db, d) == list(range(1, seq[d] + 1)), f"{d}: events missing or duplicated"
    assert db.gaps() == []
    assert ingest.stop() == 0
    pub.close()
    db.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_gaps_detected_and_cleared_when_filled(kind, mosquitto, tmp_path, request, ingest_factory):
    url = db_url(kind, tmp_path, request)
    port = free_port()
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "0",
                           "--metrics-listen", f"127.0.0.1:{port}").start()
    pub = Publisher(mosquitto.port)
    d = "gate-1"
    evs = {s: event(d, SITE, s) for s in range(1, 9)}
    pub.batch(SITE, d, [evs[1], evs[2]])
    pub.batch(SITE, d, [evs[4]])
    pub.batch(SITE, d, [evs[7], evs[8]])
    db = open_db(url)
    wait_for(lambda: _count(db) == 5, 30, "5 events stored")
    out = central("gaps", "--db", url, "--json")
    assert out.returncode == 0, out.stderr
    assert [(g["first_missing"], g["last_missing"]) for g in json.loads(out.stdout)] == [(3, 3), (5, 6)]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "edge_central_gaps 2" in metrics and "edge_central_missing_events 3" in metrics
    # seq 3 is a command result: cmd/result shares the device's sequence with events/#.
    result = {**event(d, SITE, 3, "command.result"), "payload": {"id": "c1", "status": "ok"}}
    pub.batch(SITE, d, [result], topic=f"edge/v1/{SITE}/{d}/cmd/result")
    pub.batch(SITE, d, [evs[5], evs[6]])
    pub.batch(SITE, d, [evs[1]])  # redelivered: a duplicate, absorbed
    wait_for(lambda: _count(db) == 8, 30, "the gaps filled")
    assert json.loads(central("gaps", "--db", url, "--json").stdout) == []
    metrics = wait_for(lambda: (m := urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10)
                                .read().decode()) and "edge_central_duplicates_total 1" in m and m,
                       30, "the duplicate counted")
    assert "edge_central_gaps 0" in metrics
    assert f'edge_central_device_last_seen_timestamp_seconds{{site="{SITE}",device="{d}"}}' in metrics
    listed = json.loads(central("events", "--db", url, "--device", d, "--since", "1h", "--json").stdout)
    assert sorted(e["seq"] for e in listed) == list(range(1, 9))  # oldest first by ts
    ingest.stop()
    pub.close()
    db.close()


def test_registry_from_birth_and_death_and_rejects_kept(mosquitto, tmp_path, ingest_factory):
    url = str(tmp_path / "central.db")
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "0").start()
    pub = Publisher(mosquitto.port)
    state = {"online": True, "device": "tab-1", "site": SITE, "role": "tablet", "version": "0.1.0",
             "boot_seq": 4, "started_at": "2026-01-01T00:00:00+00:00", "ts": "2026-01-01T00:00:01+00:00"}
    pub.send(f"edge/v1/{SITE}/tab-1/state", json.dumps(state).encode(), retain=True)
    db = open_db(url)
    wait_for(lambda: db.devices() and db.devices()[0]["online"], 30, "the birth applied")
    old_death = {**state, "online": False, "boot_seq": 3, "reason": "connection_lost"}
    del old_death["ts"]
    pub.send(f"edge/v1/{SITE}/tab-1/state", json.dumps(old_death).encode())  # an older boot's will: ignored
    pub.send(f"edge/v1/{SITE}/tab-1/events/sim", b'{"events": [{"id": "x"}]}')  # no seq: rejected, kept
    wait_for(lambda: db.query("SELECT COUNT(*) FROM rejects")[0][0] == 1, 30, "the reject stored")
    assert db.devices()[0]["online"] is True and db.devices()[0]["boot_seq"] == 4
    death = {**old_death, "boot_seq": 4, "reason": "shutdown"}
    pub.send(f"edge/v1/{SITE}/tab-1/state", json.dumps(death).encode(), retain=True)
    wait_for(lambda: db.devices()[0]["online"] is False, 30, "the death applied")
    out = json.loads(central("devices", "--db", url, "--json").stdout)
    assert out[0]["device"] == "tab-1" and out[0]["offline_reason"] == "shutdown" and out[0]["version"] == "0.1.0"
    reason = db.query("SELECT reason FROM rejects")[0][0]
    assert "seq" in reason or "type" in reason
    ingest.stop()
    pub.close()


def test_replaced_store_is_a_new_stream_not_duplicates(mosquitto, tmp_path, ingest_factory):
    """A device whose store was replaced starts seq at 1 again under a new store id: central keeps
    both streams (no false duplicates), and gaps are per (device, store)."""
    url = str(tmp_path / "central.db")
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--linger-ms", "0").start()
    pub = Publisher(mosquitto.port)
    d = "gate-9"
    pub.batch(SITE, d, [event(d, SITE, s) for s in (1, 2, 3)], store="store-old")
    pub.batch(SITE, d, [event(d, SITE, s) for s in (1, 2)], store="store-new")
    pub.batch(SITE, d, [event(d, SITE, 4)], store="store-new")
    db = open_db(url)
    wait_for(lambda: db.query("SELECT COUNT(*) FROM events")[0][0] == 6, 30, "both streams stored")
    assert [(g["store"], g["first_missing"]) for g in db.gaps(d)] == [("store-new", 3)]
    assert ingest.stop() == 0
    pub.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_in_one_group_store_every_event_once(kind, mosquitto, tmp_path, request, ingest_factory):
    url = db_url(kind, tmp_path, request)
    first = ingest_factory(tmp_path, mosquitto.uri, url, instance=1).start()
    second = ingest_factory(tmp_path, mosquitto.uri, url, instance=2).start()
    pub = Publisher(mosquitto.port)
    devices = [f"tab-{i}" for i in range(4)]
    for n in range(15):
        for d in devices:
            pub.batch(SITE, d, [event(d, SITE, n * 10 + k + 1) for k in range(10)])
    db = open_db(url)
    wait_for(lambda: _count(db) == 600, 60, "all 600 events")
    for d in devices:
        assert _seqs(db, d) == list(range(1, 151))
    assert first.stop() == 0 and second.stop() == 0
    shares = [log.read_text() for log in (first.log, second.log)]
    assert all("central_subscribed" in s for s in shares)
    pub.close()
