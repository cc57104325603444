"""Acceptance: zero loss under faults.

Sim drivers produce ~50 000 events while the broker is stopped and restarted
5 times and ``edge run`` is SIGKILLed 5 times at random moments. An
independent subscriber with a persistent session at QoS 1 must receive every
event id the store holds and every seq from the first to the last. Duplicates
are allowed (at-least-once), counted and reported.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time

import pytest

from edge.testing import dump_toml

TARGET = 50_000
EVENTS = "edge/v1/site-1/dev-1/events/#"


class Tally:
    """Parses only new messages on each check, so waiting stays cheap at 50 000 events."""

    def __init__(self, collector):
        self.collector, self.done = collector, 0
        self.seqs: dict[int, str] = {}
        self.copies = 0

    def update(self) -> None:
        messages = self.collector.messages[self.done:]
        self.done += len(messages)
        for msg in messages:
            for event in json.loads(msg.payload)["events"]:
                previous = self.seqs.setdefault(event["seq"], event["id"])
                assert previous == event["id"], f"seq {event['seq']} carried two different events"
                self.copies += 1

    def covers(self, want: dict[int, str]) -> bool:
        self.update()
        return len(self.seqs) >= len(want) and all(s in self.seqs for s in want)


def _stored(state_dir) -> dict[int, str]:
    db = sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, id FROM events").fetchall())
    finally:
        db.close()


def _head(state_dir) -> int:
    try:
        db = sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_zero_loss_under_broker_restarts_and_kill_9(base_config, mosquitto, edge_daemon, mqtt_collector):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    subscriber = mqtt_collector(mosquitto, EVENTS, session=True)
    tally = Tally(subscriber)
    cfg = {**base_config,
           "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.05, "backoff_max_s": 0.5},
           "store": {"retention_bytes": 256 * 1024 * 1024},  # keep acked history to compare against
           # Eight producers at full speed: concurrent appends share each group commit's fsync.
           "drivers": [{"name": f"beat{i}", "kind": "sim.heartbeat", "rate": 0, "priority": "normal",
                        "payload_bytes": 100} for i in range(8)]}
    daemon = edge_daemon(cfg)
    faults = ["broker"] * 5 + ["kill"] * 5
    rng.shuffle(faults)
    started = time.monotonic()
    for fault in faults:
        time.sleep(rng.uniform(0.3, 2.0))  # a random moment in the production run
        if fault == "broker":
            mosquitto.stop()
            time.sleep(rng.uniform(0.1, 1.0))  # the outage
            mosquitto.start()
        else:
            daemon.kill()
            daemon.start()
    # Keep producing up to the target, then stop the drivers (a restart with none left).
    deadline = time.monotonic() + 60
    while _head(daemon.state_dir) < TARGET and time.monotonic() < deadline:
        time.sleep(0.2)
    daemon.config["drivers"] = []
    daemon.config_path.write_text(dump_toml(daemon.config))
    daemon.restart()
    produced_s = time.monotonic() - started

    want = _stored(daemon.state_dir)
    assert len(want) >= TARGET, f"only {len(want)} events produced (seed {seed})"
    subscriber.wait_for(lambda c: tally.covers(want), timeout=60,
                        what=f"every stored event at the subscriber (seed {seed})")
    first, last = min(want), max(want)
    missing = [s for s in range(first, last + 1) if s not in tally.seqs]
    assert not missing, f"seqs never received: {missing[:20]} (seed {seed})"
    assert all(tally.seqs[s] == want[s] for s in want), "an id arrived under the wrong seq"
    duplicates = tally.copies - len(tally.seqs)
    print(f"\nchaos seed={seed} events={len(want)} seq={first}..{last} received_copies={tally.copies} "
          f"duplicates={duplicates} ({duplicates / len(want):.1%}) production_s={produced_s:.1f} "
          f"total_s={time.monotonic() - started:.1f}")
    status = json.loads(daemon.cli("outbox", "stats", "--json").stdout)
    assert status["pending"] == 0
