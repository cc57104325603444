"""Birth/death device state and broker failover, observed by independent subscribers."""

from __future__ import annotations

import json
import time

from edge.config import Settings
from edge.events import make_event
from edge.mqtt import MqttLink
from edge.store import Store

STATE = "edge/v1/site-1/dev-1/state"


def _mqtt(brokers: list[str]) -> dict:
    return {"brokers": brokers, "backoff_min_s": 0.05, "backoff_max_s": 0.3}


def _states(collector) -> list[dict]:
    return [m.json() for m in collector.on_topic("/state")]


def _has_state(online: bool, boot_seq: int, reason: str | None = None):
    def check(collector):
        return any(s["online"] is online and s["boot_seq"] == boot_seq
                   and (reason is None or s.get("reason") == reason) for s in _states(collector))
    return check


def test_birth_on_connect_will_on_kill_and_death_on_graceful_stop(base_config, mosquitto, edge_daemon,
                                                                  mqtt_collector):
    watcher = mqtt_collector(mosquitto, STATE)
    cfg = {**base_config, "mqtt": _mqtt([mosquitto.uri]),
           "drivers": [{"name": "beat", "kind": "sim.heartbeat", "rate": 20}]}
    daemon = edge_daemon(cfg)
    watcher.wait_for(_has_state(True, 1), timeout=15, what="first birth")
    birth = next(s for s in _states(watcher) if s["online"])
    assert birth["device"] == "dev-1" and birth["site"] == "site-1" and birth["role"] == "gate"
    assert birth["version"] and birth["started_at"]
    assert "beat" in birth["drivers"] and birth["drivers"]["beat"]["kind"] == "sim.heartbeat"
    assert {"pending", "oldest_pending_age_s"} <= set(birth["outbox"])

    status = json.loads(daemon.cli("status", "--json").stdout)["daemon"]["components"]["mqtt"]
    assert status["client_id"] == "dev-1" and status["boot_seq"] == 1

    daemon.kill()  # the broker publishes the last will: offline, same boot_seq
    watcher.wait_for(_has_state(False, 1, "connection_lost"), timeout=15, what="will after kill -9")

    daemon.start()
    watcher.wait_for(_has_state(True, 2), timeout=15, what="birth after restart")
    assert daemon.stop() == 0
    watcher.wait_for(_has_state(False, 2, "shutdown"), timeout=15, what="graceful death")
    # Retained: whoever subscribes later learns the device is offline, and which boot died.
    late = mqtt_collector(mosquitto, STATE)
    late.wait_for(lambda c: c.messages, timeout=10, what="retained state")
    last = late.messages[-1]
    assert last.retain and last.json()["online"] is False and last.json()["boot_seq"] == 2


def test_state_republished_when_driver_health_changes(base_config, mosquitto, edge_daemon, mqtt_collector):
    watcher = mqtt_collector(mosquitto, STATE)
    cfg = {**base_config, "mqtt": _mqtt([mosquitto.uri]),
           "supervisor": {"backoff_initial_s": 0.05, "backoff_max_s": 0.1},
           "drivers": [{"name": "flaky", "kind": "sim.heartbeat", "rate": 200, "fail_every": 5}]}
    edge_daemon(cfg)
    watcher.wait_for(lambda c: any(s["online"] and s["drivers"]["flaky"]["status"] != "ok"
                                   for s in _states(c)), timeout=20, what="a birth showing the fault")
    assert {s["boot_seq"] for s in _states(watcher)} == {1}


def test_health_flapping_is_rate_limited(base_config, mosquitto, mqtt_collector):
    watcher = mqtt_collector(mosquitto, STATE)
    settings = Settings(**{**base_config, "mqtt": _mqtt([mosquitto.uri])})
    link = MqttLink(settings, None, health=lambda: {"flaky": {"status": "degraded"}})
    link.start()
    try:
        watcher.wait_for(lambda c: len(_states(c)) >= 1, timeout=10, what="birth")
        started = time.monotonic()
        while time.monotonic() - started < 3.0:  # a driver flapping 100 times a second
            link.notify_health_changed()
            time.sleep(0.01)
        watcher.wait_for(lambda c: len(_states(c)) >= 2, timeout=10, what="re-birth")
        births = len(_states(watcher))
        assert 2 <= births <= 1 + 3.0 / 2.0 + 1, births  # at most one per 2 s after the first
        link.rebirth()  # the rebirth command: published even though health did not change
        watcher.wait_for(lambda c: len(_states(c)) > births, timeout=10, what="rebirth")
    finally:
        link.stop()


def _link(base_config, brokers):
    settings = Settings(**{**base_config, "mqtt": _mqtt(brokers)})
    store = Store(settings.state_dir, device="dev-1", site="site-1")
    link = MqttLink(settings, store, device_state=False)
    link.start()
    return link, store


def test_failover_to_the_second_broker_and_back(base_config, mosquitto_factory, mqtt_collector):
    a, b = mosquitto_factory(), mosquitto_factory()
    on_a, on_b = mqtt_collector(a, "edge/#"), mqtt_collector(b, "edge/#")
    link, store = _link(base_config, [a.uri, b.uri])
    try:
        assert link.wait_connected(10) and link.status()["broker"] == a.uri
        first = store.append(make_event(device="dev-1", site="site-1", type="sim.beat", source="t"))
        on_a.wait_for(lambda c: any(e["id"] == first.id for e in c.events()), timeout=10)
        a.stop()
        second = store.append(make_event(device="dev-1", site="site-1", type="sim.beat", source="t"))
        on_b.wait_for(lambda c: any(e["id"] == second.id for e in c.events()), timeout=15,
                      what="event through the second broker")
        assert link.status()["broker"] == b.uri
        a.start()
        b.stop()  # and back to the first when the second goes
        third = store.append(make_event(device="dev-1", site="site-1", type="sim.beat", source="t"))
        on_a.wait_for(lambda c: any(e["id"] == third.id for e in c.events()), timeout=15)
        assert link.status()["broker"] == a.uri
    finally:
        link.stop()
        store.close()


def test_first_broker_down_at_start_connects_to_the_next(base_config, mosquitto, mqtt_collector):
    from edge.testing import free_port

    link, store = _link(base_config, [f"mqtt://127.0.0.1:{free_port()}", mosquitto.uri])
    try:
        assert link.wait_connected(10)
        assert link.status()["broker"] == mosquitto.uri
        assert link.status()["last_error"]["layer"] == "tcp"
    finally:
        link.stop()
        store.close()


def test_birth_and_death_payloads_match_the_published_contract(base_config):
    """The AsyncAPI document is generated from edge.contract: the payloads must validate."""
    from edge.contract import DeviceStateMessage
    from edge.mqtt.state import DeviceState

    class FakeLink:  # only what DeviceState touches at construction
        def set_will(self, topic, payload):
            self.will = (topic, payload)

        def add_connection_listener(self, fn):
            pass

    settings = Settings(**base_config)
    store = Store(settings.state_dir, device="dev-1", site="site-1")
    try:
        link = FakeLink()
        state = DeviceState(link, settings, store, health=lambda: {"beat": {"status": "ok", "kind": "sim"}})
        birth = DeviceStateMessage.model_validate_json(state.birth())
        death = DeviceStateMessage.model_validate_json(state.death(reason="shutdown"))
        will = DeviceStateMessage.model_validate_json(link.will[1])
        assert birth.online and not death.online and will.reason == "connection_lost"
        assert birth.boot_seq == death.boot_seq == will.boot_seq == 1
        assert link.will[0] == STATE
        assert DeviceState(link, settings, store).boot_seq == 2  # persisted, +1 per start
    finally:
        store.close()
