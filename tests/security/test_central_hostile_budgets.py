"""A compromised device against the central ingest's estate-wide figures and its disk: the real
`edge central ingest`, a real mosquitto, SQLite and PostgreSQL (fixtures and helpers of
test_central_hostile_device.py).

Gap skew: one device publishing seq 1 and then seq 2**63-1 on its own topic made
`edge_central_missing_events` jump to ~9.2e18, hiding every other device's real gaps in the
total; on PostgreSQL the same seq made the gaps query itself fail (`seq + 1` out of bigint
range), so `edge central gaps` and the metrics lost every device's gaps.

Rejects: one device could store unlimited rejects of up to --max-message-bytes each, and
central's disk filled. Now each device has a reject budget per window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
import structlog

from edge.testing.broker import free_port
from edge.testing.central import Publisher, db_url, event
from edge.testing.wait import wait_for
from services.central._budget import REJECT_HEAD, RejectBudget
from services.central._parse import Parsed
from services.central.db import open_db
from tests.security.test_central_hostile_device import (
    EVIL,
    EVIL_EVENTS,
    GOOD,
    LIMIT,
    SITE,
    _batch,
    _raw_event,
    _seqs,
)

EVIL2, GOOD2 = "tab-evil-2", "gate-2"
SEQ_MAX = 2**63 - 1


def _scrape(port: int) -> dict[str, str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _label(device: str) -> str:
    return f'{{site="{SITE}",device="{device}"}}'


def _send(pub: Publisher, device: str, *seqs: int) -> None:
    pub.batch(SITE, device, [event(device, SITE, s) for s in seqs])


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_device_jumping_its_seq_is_named_and_does_not_hide_other_devices_gaps(
        kind, mosquitto, tmp_path, request, ingest_factory):
    url, port = db_url(kind, tmp_path, request), free_port()
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--metrics-listen", f"127.0.0.1:{port}").start()
    pub = Publisher(mosquitto.port)
    _send(pub, GOOD, 1, 2, 5)                              # real gap: 3..4
    _send(pub, GOOD2, 1, 900_002)                          # a large real gap, under the bound: counted
    pub.send(EVIL_EVENTS, _batch(_raw_event(1)))           # the attack of the review
    pub.send(EVIL_EVENTS, _batch(_raw_event(SEQ_MAX)))
    # Many gaps, each under the bound, adding up past it: the bound is per device, not per gap.
    _send(pub, EVIL2, 1, 600_000, 1_200_000)
    db = open_db(url)
    wait_for(lambda: len(_seqs(db, EVIL)) == 2 and len(_seqs(db, EVIL2)) == 3 and len(_seqs(db, GOOD)) == 3
             and len(_seqs(db, GOOD2)) == 2, 30, "every event stored")
    m = wait_for(lambda: (s := _scrape(port)).get("edge_central_db_up") == "1" and s, 30, "a scrape")
    assert m["edge_central_missing_events"] == str(2 + 900_000), "the other devices' real gaps, exactly"
    assert m["edge_central_gaps"] == "2" and m["edge_central_devices_with_gaps"] == "2"
    assert m["edge_central_implausible_gap_devices"] == "2"
    assert m[f"edge_central_device_gap_implausible{_label(EVIL)}"] == "1"
    assert m[f"edge_central_device_gap_implausible{_label(EVIL2)}"] == "1"
    assert f"edge_central_device_gap_implausible{_label(GOOD)}" not in m
    assert m[f"edge_central_device_missing_events{_label(GOOD)}"] == "2"
    assert m[f"edge_central_device_missing_events{_label(EVIL)}"] == str(SEQ_MAX - 2)
    _scrape(port)  # a second scrape: the alarm is logged once per device, not per scrape
    log = ingest.log.read_text()
    alarms = [line for line in log.splitlines() if "central_gap_implausible" in line]
    assert len(alarms) == 2 and any(EVIL in a for a in alarms) and any(EVIL2 in a for a in alarms), alarms

    gaps = _cli("gaps", "--db", url, "--json")
    assert {(g["device"], g["implausible"]) for g in json.loads(gaps)} == {
        (GOOD, False), (GOOD2, False), (EVIL, True), (EVIL2, True)}
    text = _cli("gaps", "--db", url)
    assert "total: 900002 missing in 2 gap(s) of 2 device(s)" in text
    assert f"IMPLAUSIBLE: {EVIL} misses {SEQ_MAX - 2} events" in text
    assert f"{GOOD} store=- missing seq 3..4 (2)\n" in text
    assert ingest.stop() == 0
    pub.close()
    db.close()


def _cli(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "edge", "central", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_one_devices_rejects_are_bounded_and_others_and_valid_events_unaffected(
        kind, mosquitto, tmp_path, request, ingest_factory):
    url, port = db_url(kind, tmp_path, request), free_port()
    ingest = ingest_factory(tmp_path, mosquitto.uri, url, "--max-message-bytes", str(LIMIT),
                            "--reject-max-count", "5", "--reject-max-bytes", "300000",
                            "--metrics-listen", f"127.0.0.1:{port}").start()
    pub = Publisher(mosquitto.port)
    _send(pub, GOOD, 1, 2, 3)
    big = [b"{" + bytes([65 + i]) * 200_000 for i in range(2)]   # not JSON, under the size limit
    for payload in big:
        pub.send(EVIL_EVENTS, payload)          # the first stored whole; the second over the bytes: a head
    small = [f"not json {i}".encode() for i in range(10)]
    for payload in small:
        pub.send(EVIL_EVENTS, payload)          # three more stored (count 5), then only counted
    pub.send(EVIL_EVENTS, b"[" * (LIMIT + 10))  # oversize, past the count: counted only
    pub.send(EVIL_EVENTS, _batch(_raw_event(1)))  # the over-budget device's VALID event: stored
    good_reject = b"{" + b"g" * 100_000          # a well-behaved device's reject: its own budget, whole
    pub.send(f"edge/v1/{SITE}/{GOOD}/events/sim", good_reject)
    _send(pub, GOOD, 4, 5, 6)
    db = open_db(url)
    wait_for(lambda: _seqs(db, GOOD) == [1, 2, 3, 4, 5, 6] and _seqs(db, EVIL) == [1], 60,
             "the valid events of both devices stored")
    wait_for(lambda: _scrape(port)["edge_central_rejected_total"] == str(2 + 10 + 1 + 1), 30,
             "every reject counted")
    rows = db.query("SELECT topic, reason, payload FROM rejects ORDER BY n")
    evil = [(r, bytes(p)) for t, r, p in rows if t == EVIL_EVENTS]
    assert [p for _r, p in evil] == [big[0], big[1][:REJECT_HEAD], *small[:3]]
    assert "over its reject budget" in evil[1][0] and f"first {REJECT_HEAD} of 200001 bytes kept" in evil[1][0]
    assert [bytes(p) for t, _r, p in rows if t != EVIL_EVENTS] == [good_reject]
    m = _scrape(port)
    assert m[f"edge_central_device_rejects_truncated_total{_label(EVIL)}"] == "1"
    assert m[f"edge_central_device_rejects_unstored_total{_label(EVIL)}"] == str(7 + 1)
    assert f"edge_central_device_rejects_unstored_total{_label(GOOD)}" not in m
    assert m["edge_central_rejects_unstored_total"] == "8" and m["edge_central_rejects_truncated_total"] == "1"
    log = ingest.log.read_text()
    alarms = [line for line in log.splitlines() if "central_rejects_over_budget" in line]
    assert len(alarms) == 1 and EVIL in alarms[0], alarms
    assert log.count("central_message_rejected") == 5 + 1, "a log line per STORED reject only"
    assert ingest.proc.poll() is None and ingest.stop() == 0
    pub.close()
    db.close()


def test_the_reject_budget_opens_again_each_window_and_charges_only_committed_batches():
    now = [0.0]
    budget = RejectBudget(window_s=60, max_count=2, max_bytes=10_000, clock=lambda: now[0])
    topic = f"edge/v1/{SITE}/{EVIL}/events/sim"

    def batch(n: int) -> Parsed:
        return Parsed(rejects=[(topic, "bad", b"x" * 100) for _ in range(n)])

    retried = batch(3)
    budget.apply(retried)           # a batch whose write failed is not charged: its retry gets it all
    again = batch(3)
    with structlog.testing.capture_logs() as logs:
        budget.settle(charge := budget.apply(again))
        assert len(again.rejects) == 2 and charge.unstored_total == 1
        later = batch(1)
        budget.settle(budget.apply(later))
        assert later.rejects == [] and budget.over_budget() == {(SITE, EVIL): {"truncated": 0, "unstored": 2}}
        now[0] = 61.0               # a new window: stored again, named again
        fresh = batch(3)
        budget.settle(budget.apply(fresh))
        assert len(fresh.rejects) == 2
    named = [e for e in logs if e["event"] == "central_rejects_over_budget"]
    assert [e["device"] for e in named] == [EVIL, EVIL]
    other = Parsed(rejects=[(f"edge/v1/{SITE}/{GOOD}/events/sim", "bad", b"y" * 100)])
    budget.settle(budget.apply(other))  # another device's budget is its own
    assert len(other.rejects) == 1
