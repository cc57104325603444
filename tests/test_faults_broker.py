"""Broker outage under load: the daemon is back within seconds of the broker, nothing lost.

An unreachable broker is retried with full jitter under a 10 s cap (see
``edge.mqtt.backoff.reconnect_delay``); before, the back-off grew to 60 s and a
site's gates looked offline for half a minute after every broker restart.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from edge.cli._state import live_status
from edge.testing.wait import wait_for

STATE = "edge/v1/site-1/dev-1/state"


def _births_after(collector, start: int) -> list[dict]:
    out = []
    for msg in collector.messages[start:]:
        if msg.topic == STATE:
            doc = json.loads(msg.payload)
            if doc.get("online"):
                out.append(doc)
    return out


@pytest.mark.slow
def test_broker_restart_under_load_reconnects_within_12_s(base_config, mosquitto, edge_daemon, mqtt_collector):
    # backoff_min_s 30: uncapped, the first retry is drawn from 0-30 s and each failed one doubles
    # the window (to the 60 s max), so the daemon is rarely back within 12 s; capped it stays <= 10 s.
    cfg = {**base_config, "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 30.0, "backoff_max_s": 60.0},
           "drivers": [{"name": "beat", "kind": "sim.heartbeat", "rate": 200, "priority": "normal"}]}
    collector = mqtt_collector(mosquitto, ["edge/v1/site-1/dev-1/#"], session=True)
    daemon = edge_daemon(cfg)
    collector.wait_for(lambda c: _births_after(c, 0), timeout=15, what="first birth")
    collector.wait_for(lambda c: len(c.events("sim.")) > 200, timeout=15, what="events flowing")

    failures = _connect_failures(daemon.state_dir)
    mosquitto.stop()
    down_at = time.monotonic()
    # An outage with a failed reconnect in it: the broker comes back to a link that is retrying.
    wait_for(lambda: _connect_failures(daemon.state_dir) > failures, 30, "a failed reconnect", interval=0.1)
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))  # and down for 3 s at least
    mark = len(collector.messages)
    mosquitto.start()
    back_at = time.monotonic()
    collector.wait_for(lambda c: _births_after(c, mark), timeout=30, what="birth after the broker restart")
    took = time.monotonic() - back_at
    print(f"reconnected {took:.1f} s after the broker came back")
    assert took <= 12.0, f"reconnected {took:.1f} s after the broker came back"

    # Nothing produced during the outage is lost: every seq up to one made after the restart arrives.
    head = _head(daemon.state_dir)
    collector.wait_for(lambda c: {e["seq"] for e in c.events()} >= set(range(1, head + 1)),
                       timeout=60, what=f"every seq up to {head}")


def _connect_failures(state_dir) -> int:
    """The daemon's count of failed broker connections, from its memory (control socket)."""
    status = live_status(state_dir) or {}
    return status.get("components", {}).get("mqtt", {}).get("connect_failures", 0)


def _head(state_dir) -> int:
    db = sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    finally:
        db.close()
