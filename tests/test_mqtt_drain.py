"""``edge outbox drain``: a device back from weeks offline syncs in the foreground."""

from __future__ import annotations

import json

from edge.config import Settings
from edge.events import make_event
from edge.store import Store


def _preload(config: dict, n: int) -> None:
    settings = Settings(**config)
    store = Store(settings.state_dir, device="dev-1", site="site-1")
    store.append_many([make_event(device="dev-1", site="site-1", type="turnstile.passage", source="t",
                                  payload={"n": i}) for i in range(n)])
    store.close()


def test_drain_sends_everything_pending_with_the_daemon_stopped(base_config, mosquitto, edge_daemon,
                                                                mqtt_collector):
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#")
    config = {**base_config, "mqtt": {"brokers": [mosquitto.uri]}}
    _preload(config, 3000)
    daemon = edge_daemon(config, start=False)
    result = daemon.cli("outbox", "drain", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["sent_events"] == 3000 and report["pending"] == 0
    assert report["events_per_s"] > 0 and report["broker"] == mosquitto.uri
    assert "draining outbox" in result.stderr  # the progress bar
    collector.wait_for(lambda c: len({e["seq"] for e in c.events()}) == 3000, timeout=10)
    stats = json.loads(daemon.cli("outbox", "stats", "--json").stdout)
    assert stats["pending"] == 0


def test_drain_refuses_while_the_daemon_runs(base_config, mosquitto, edge_daemon):
    daemon = edge_daemon({**base_config, "mqtt": {"brokers": [mosquitto.uri]}})
    result = daemon.cli("outbox", "drain")
    assert result.returncode != 0
    assert "daemon is running" in result.stderr and "stop it first" in result.stderr


def test_drain_without_a_reachable_broker_says_why(base_config, edge_daemon):
    from edge.testing import free_port

    config = {**base_config, "mqtt": {"brokers": [f"mqtt://127.0.0.1:{free_port()}"]}}
    _preload(config, 10)
    daemon = edge_daemon(config, start=False)
    result = daemon.cli("outbox", "drain", "--timeout", "2", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["ok"] and "tcp layer" in report["error"] and "connection refused" in report["error"]


def test_drain_with_nothing_pending_says_so_at_once_even_without_a_broker(base_config, edge_daemon):
    from edge.testing import free_port

    config = {**base_config, "mqtt": {"brokers": [f"mqtt://127.0.0.1:{free_port()}"]}}
    _preload(config, 0)
    daemon = edge_daemon(config, start=False)
    result = daemon.cli("outbox", "drain", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert "nothing to drain" in result.stdout
    report = json.loads(daemon.cli("outbox", "drain", "--json").stdout)
    assert report["ok"] and report["pending_before"] == 0 and report["sent_events"] == 0
