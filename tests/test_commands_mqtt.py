"""Signed commands end to end: real mosquitto, real `edge run` with a sim driver, real signatures."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from edge.commands.build import build_command
from edge.commands.local import send
from edge.commands.publish import publish_command
from edge.signing import generate_keypair, load_private_key

SITE, DEVICE = "site-1", "dev-1"
RESULT_TOPIC = f"edge/v1/{SITE}/{DEVICE}/cmd/result"


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    out = {}
    for name in ("alice", "bob", "mallory"):
        key, pub, _kid = generate_keypair(folder, name)
        out[name] = (load_private_key(key), pub)
    return out


@pytest.fixture
def setup(mosquitto, mqtt_collector, edge_daemon, base_config, keys):
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(keys["alice"][1]), str(keys["bob"][1])], "clock_skew_s": 60},
        commands={"two_person": ["set-log-level"]},
        drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 2.0}],
    )
    collector = mqtt_collector(mosquitto, [RESULT_TOPIC, f"edge/v1/{SITE}/{DEVICE}/events/system",
                                           f"edge/v1/{SITE}/{DEVICE}/state"])
    daemon = edge_daemon(base_config)
    wait_online(collector)
    return mosquitto, collector, daemon


def wait_online(collector, after: int = 0) -> None:
    def online(c):
        return [m for m in c.on_topic("/state")[after:] if m.payload and m.json().get("online") is True]
    collector.wait_for(online, 20, "the device's online state")


def results(collector, command_id: str | None = None) -> list[dict]:
    out = [e["payload"] for m in collector.on_topic("/cmd/result") for e in m.json()["events"]]
    return [r for r in out if command_id is None or r["id"] == command_id]


def wait_results(collector, command_id: str, n: int = 1, timeout: float = 20) -> list[dict]:
    return collector.wait_for(lambda c: len(results(c, command_id)) >= n and results(c, command_id),
                              timeout, f"{n} result(s) for command {command_id}")


def signed(keys, *signers, **kw) -> dict:
    kw.setdefault("target", "hb")
    kw.setdefault("name", "ping")
    kw.setdefault("device", DEVICE)
    kw.setdefault("site", SITE)
    return build_command(keys=[keys[s][0] for s in signers], **kw)


def publish(broker, doc, *, device=DEVICE) -> None:
    publish_command(broker.uri, SITE, device, doc)


def test_valid_command_runs_exactly_once_when_delivered_twice(setup, keys):
    broker, collector, daemon = setup
    doc = signed(keys, "alice")
    publish(broker, doc)
    publish(broker, doc)  # the broker (or an attacker) delivers it again
    got = wait_results(collector, doc["id"], 2)
    assert sorted(r["status"] for r in got) == ["ok", "rejected"]
    ok = next(r for r in got if r["status"] == "ok")
    assert ok["result"]["pong"] is True and ok["origin"] == "mqtt" and len(ok["signed_by"]) == 1
    assert next(r for r in got if r["status"] == "rejected")["reason"] == "replay"
    # And across a restart the id is still remembered.
    daemon.restart()
    publish(broker, doc)
    third = wait_results(collector, doc["id"], 3)
    assert [r["status"] for r in third].count("ok") == 1


def test_bad_commands_are_rejected_with_their_reasons(setup, keys):
    broker, collector, daemon = setup
    now = datetime.now(UTC)
    tampered = signed(keys, "alice", args={"n": 1})
    tampered["args"]["n"] = 2
    replayed = signed(keys, "alice")
    cases = {
        "tampered": (tampered, "bad_signature"),
        "unsigned": (signed(keys), "bad_signature"),
        "untrusted": (signed(keys, "mallory"), "bad_signature"),
        "expired": (signed(keys, "alice", issued_at=now - timedelta(minutes=10), ttl_s=-60), "expired"),
        "future": (signed(keys, "alice", now=now + timedelta(minutes=5)), "not_yet_valid"),
        "other_device": (signed(keys, "alice", device="dev-2"), "wrong_target"),
        "no_driver": (signed(keys, "alice", target="lane9"), "wrong_target"),
        "under_signed": (signed(keys, "alice", target="edge", name="set-log-level", args={"level": "debug"}),
                         "under_signed"),
    }
    publish(broker, replayed)
    wait_results(collector, replayed["id"])
    cases["replayed"] = (replayed, "replay")
    for doc, _reason in cases.values():
        publish(broker, doc)
    for what, (doc, reason) in cases.items():
        got = wait_results(collector, doc["id"], 2 if what == "replayed" else 1)
        final = got[-1]
        assert final["status"] == "rejected" and final["reason"] == reason, (what, final)
        assert final["detail"], what
    alarms = collector.wait_for(
        lambda c: len([e for e in c.events("system.command_rejected")]) >= len(cases) and
        c.events("system.command_rejected"), 20, "rejection alarms")
    assert {a["payload"]["reason"] for a in alarms} == {r for _d, r in cases.values()}
    assert all(a["priority"] == "alarm" for a in alarms)
    # Two distinct trusted signers satisfy the two-person rule.
    two = signed(keys, "alice", "bob", target="edge", name="set-log-level", args={"level": "info"})
    publish(broker, two)
    assert wait_results(collector, two["id"])[0]["status"] == "ok"


def test_malformed_payloads_are_answered_when_an_id_can_be_read(setup, keys):
    broker, collector, daemon = setup
    import paho.mqtt.publish as single

    single.single(f"edge/v1/{SITE}/{DEVICE}/cmd", b'{"id": "junk-0001", "name": 5}', qos=1,
                  hostname="127.0.0.1", port=broker.port)
    single.single(f"edge/v1/{SITE}/{DEVICE}/cmd", b"\x00garbage", qos=1, hostname="127.0.0.1", port=broker.port)
    got = wait_results(collector, "junk-0001")
    assert got[0]["reason"] == "malformed"
    collector.wait_for(lambda c: len(c.events("system.command_rejected")) >= 2, 20, "two alarms")


def test_site_wide_rebirth_republishes_the_state(setup, keys):
    broker, collector, daemon = setup
    births = len(collector.on_topic("/state"))
    doc = signed(keys, "alice", target="edge", name="rebirth", device=None)
    publish(broker, doc, device=None)
    assert wait_results(collector, doc["id"])[0]["status"] == "ok"
    wait_online(collector, births)  # a fresh retained birth after the command


def test_command_sent_while_offline_runs_on_return_if_still_valid(setup, keys):
    broker, collector, daemon = setup
    daemon.stop()  # graceful: the broker keeps the session and queues QoS 1 commands
    states_before = len(collector.on_topic("/state"))
    valid = signed(keys, "alice", ttl_s=300)
    lapsing = signed(keys, "alice", ttl_s=2)
    publish(broker, valid)
    publish(broker, lapsing)
    expires = datetime.fromisoformat(lapsing["expires_at"]).timestamp()
    while time.time() <= expires + 0.1:  # a condition on the clock, not a settle delay
        time.sleep(min(0.2, max(0.01, expires + 0.1 - time.time())))
    daemon.start()
    wait_online(collector, states_before)
    assert wait_results(collector, valid["id"])[0]["status"] == "ok"
    late = wait_results(collector, lapsing["id"])[0]
    assert late["status"] == "rejected" and late["reason"] == "expired"


def test_result_produced_while_offline_is_delivered_later(setup, keys):
    broker, collector, daemon = setup
    broker.stop()
    result = send(daemon.state_dir, "hb", "ping", reason="offline check")
    assert result["status"] == "ok"  # the gate works with the network down
    broker.start()
    try:
        delivered = wait_results(collector, result["id"], timeout=30)
    except TimeoutError as exc:  # say which side stalled
        raise AssertionError(f"{exc}\ndaemon log:\n{daemon.log_tail(4000)}") from None
    assert delivered[0]["operator"] and delivered[0]["origin"] == "local"


def test_cli_sign_and_publish(setup, keys):
    broker, collector, daemon = setup
    key_file = str(keys["alice"][1].with_suffix(".key"))
    proc = daemon.cli("cmd", "sign", "--key", key_file, "--target", "edge", "--name", "set-log-level",
                      "--arg", "level=debug", "--site", SITE, "--publish", broker.uri, "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"published to edge/v1/{SITE}/cmd" in proc.stderr
    doc = json.loads(proc.stdout)
    got = wait_results(collector, doc["id"])[0]
    # set-log-level is two-person here: signed for the whole site it could be replayed to each device
    assert (got["status"], got["reason"]) == ("rejected", "wrong_target") and "'device'" in got["detail"], got
    proc = daemon.cli("cmd", "sign", "--key", key_file, "--target", "edge", "--name", "set-log-level",
                      "--arg", "level=debug", "--device", DEVICE, "--site", SITE, "--publish", broker.uri, "--json")
    got = wait_results(collector, json.loads(proc.stdout)["id"])[0]
    assert got["status"] == "rejected" and got["reason"] == "under_signed"  # one signature of the two
    bob = str(keys["bob"][1].with_suffix(".key"))
    proc = daemon.cli("cmd", "sign", "--key", key_file, "--key", bob, "--target", "edge", "--name", "ping",
                      "--device", DEVICE, "--site", SITE, "--publish", broker.uri, "--json")
    doc = json.loads(proc.stdout)
    assert len(doc["signatures"]) == 2 and wait_results(collector, doc["id"])[0]["status"] == "ok"
    unbound = daemon.cli("cmd", "sign", "--key", key_file, "--target", "edge", "--name", "ping")
    assert unbound.returncode == 1 and "--device D" in unbound.stderr
    bad_name = daemon.cli("cmd", "sign", "--key", key_file, "--target", "edge", "--name", "Unlock!", "--device", DEVICE)
    assert bad_name.returncode == 1 and "malformed" in bad_name.stderr and "name" in bad_name.stderr
