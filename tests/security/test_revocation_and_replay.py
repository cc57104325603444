"""Red team: a stolen key after it is revoked, and a used command after the clock is set back.

Over MQTT against the real daemon: the retained revocation list applies at once
(and across a restart); the revoked key is refused ``revoked_key``; the other
keys keep working. A replayed command is refused after the device's clock is
set back 48 h (the time floor persisted in commands.db says the command has
long expired), and the backwards jump is an alarm.
"""

from __future__ import annotations

import sqlite3

import paho.mqtt.publish as mqtt_publish
import pytest

from edge.trust.contract import ClockJumpedBack, RevocationsApplied
from edge.trust.revocation import topic as revocation_topic
from tests.security._redteam import DEVICE, RESULTS, SITE, SYSTEM, Keys, alarms, result_of

TRUST_EVENTS = f"edge/v1/{SITE}/{DEVICE}/events/trust"


@pytest.fixture
def device(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    keys = Keys(tmp_path / "keys")
    base_config.update(mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
                       trust={"central_keys": keys.trusted(), "clock_skew_s": 60},
                       drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 1.0}])
    collector = mqtt_collector(mosquitto, [RESULTS, SYSTEM, TRUST_EVENTS])
    return mosquitto, collector, keys, edge_daemon(base_config)


def _retain(broker, payload: bytes) -> None:
    mqtt_publish.single(revocation_topic(SITE), payload, qos=1, retain=True, hostname="127.0.0.1",
                        port=broker.port)


def _trust_events(collector, type_: str) -> list[dict]:
    return [e for m in collector.on_topic("/events/trust") for e in m.json()["events"] if e["type"] == type_]


def test_revoked_key_is_refused_at_once_and_after_a_restart(device):
    broker, collector, keys, daemon = device
    assert result_of(collector, broker, keys.command("ops", target="hb", name="ping"))["status"] == "ok"
    _retain(broker, keys.revocations(1, "ops"))
    applied = collector.wait_for(lambda c: _trust_events(c, "trust.revocations_applied"), 20, "revocation applied")
    assert applied[0]["payload"]["trusted_keys_revoked"] == [keys.kid["ops"]] and applied[0]["priority"] == "alarm"
    RevocationsApplied.model_validate(applied[0]["payload"])  # as the contract says
    got = result_of(collector, broker, keys.command("ops", target="hb", name="ping"))
    assert (got["status"], got["reason"]) == ("rejected", "revoked_key"), got
    assert result_of(collector, broker, keys.command("security", target="hb", name="ping"))["status"] == "ok"
    # A command key cannot publish the list (nor un-revoke itself), and an older list is a rollback.
    _retain(broker, keys.revocations(2, signer="security"))
    collector.wait_for(lambda c: _trust_events(c, "trust.revocations_rejected"), 20, "wrong-role list refused")
    daemon.stop()
    daemon.start()
    again = result_of(collector, broker, keys.command("ops", target="hb", name="ping"))
    assert again["reason"] == "revoked_key"
    listed = daemon.cli("keys", "--json")
    revoked = {k["key_id"]: k["revoked"] for k in __import__("json").loads(listed.stdout)["keys"]}
    assert revoked[keys.kid["ops"]] is True and revoked[keys.kid["security"]] is False


def test_replay_after_the_clock_is_set_back_48h_is_refused(device):
    broker, collector, keys, daemon = device
    doc = keys.command("ops", target="hb", name="ping", ttl_s=300)
    assert result_of(collector, broker, doc)["status"] == "ok"
    daemon.stop()
    # What the device would hold after running 48 h more and then having its clock set back
    # 48 h: the id was rightly forgotten (both clocks past its expiry), the time floor is 48 h
    # ahead of the wall clock.
    db = sqlite3.connect(daemon.state_dir / "commands.db")
    with db:
        db.execute("DELETE FROM seen_commands WHERE id = ?", (doc["id"],))
        db.execute("UPDATE meta SET value = value + 172800 WHERE key = 'uptime_s'")  # ran 48 h more
    db.close()
    daemon.start()
    replay = result_of(collector, broker, doc)
    assert (replay["status"], replay["reason"]) == ("rejected", "expired"), replay
    jumped = collector.wait_for(lambda c: alarms(c, "system.clock_jumped_back"), 20, "the clock alarm")
    assert jumped[0]["payload"]["behind_s"] > 47 * 3600
    ClockJumpedBack.model_validate(jumped[0]["payload"])
    # The device now judges time by its floor: a command signed by a clock 48 h behind is expired too.
    stale = keys.command("ops", target="hb", name="ping")
    assert result_of(collector, broker, stale)["reason"] == "expired"
