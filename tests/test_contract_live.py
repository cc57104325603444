"""The written contract against a real daemon, as a central team in another language meets it.

Commands are signed here from docs/commands.md alone (canonical JSON written out by hand,
Ed25519 from ``cryptography``; no edge.signing), and every message the daemon publishes is
checked against the published files under docs/schemas (not the models that generate them)
with an independent validator, plus what the contract says in prose: QoS and retain,
family topics, seq order, no gaps over events/# and cmd/result together, one seq per id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.publish as mqtt_publish
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests._json_schema import errors
from tests.conftest import REPO

SITE, DEVICE = "site-1", "dev-1"
SCHEMAS = REPO / "docs" / "schemas"
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


# --- signing, from docs/commands.md "Canonical encoding" -------------------------------------

def _string(s: str) -> str:
    return '"' + "".join(_SHORT_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in s) + '"'


def canonical(value) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):  # sorted by code point: Python's str order
        return "{" + ",".join(_string(k) + ":" + canonical(value[k]) for k in sorted(value)) + "}"
    raise TypeError(f"not signable by the documented rules: {type(value).__name__}")


def sign(doc: dict, key: Ed25519PrivateKey) -> dict:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = canonical({k: v for k, v in doc.items() if k != "signatures"}).encode()
    entry = {"key_id": hashlib.sha256(raw).hexdigest()[:16], "sig": base64.b64encode(key.sign(body)).decode()}
    return {**doc, "signatures": [*doc.get("signatures", []), entry]}


def command(name: str, target: str = "edge", **fields) -> dict:
    now = datetime.now(UTC)
    return {"v": 1, "id": str(uuid.uuid4()), "name": name, "target": target, "args": {}, "device": DEVICE,
            "site": SITE, "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expires_at": (now + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"), **fields}


def trust_anchor(folder: Path, name: str) -> tuple[Ed25519PrivateKey, Path]:
    """A key pair as docs/security.md describes the device's side: PEM public key + roles file, 0640."""
    folder.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pub = folder / f"{name}.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    roles = folder / f"{name}.pub.json"
    roles.write_text(json.dumps({"roles": ["command"]}))
    for path in (pub, roles):
        os.chmod(path, 0o640)
    return key, pub


# --- checking what the device sends -----------------------------------------------------------

def _schema(relative: str) -> dict:
    return json.loads((SCHEMAS / relative).read_text())


def contract_problems(messages) -> tuple[list[str], set[str]]:
    """Every breach of the contract in ``messages``, and the event types whose payloads had a schema."""
    schemas = {"events": _schema("messages/deviceEvents.json"), "result": _schema("messages/commandResults.json"),
               "state": _schema("messages/deviceState.json")}
    event_schema = _schema("Event.json")
    problems, checked, seq_of_id, seqs = [], set(), {}, set()
    for m in messages:
        rest = m.topic.split("/")[4:]
        doc = m.json()
        if rest == ["state"]:
            problems += [f"{m.topic}: {e}" for e in errors(doc, schemas["state"])]
            continue
        if m.retain:
            problems.append(f"{m.topic}: retained, only state may be")
        kind, family = ("result", "command") if rest == ["cmd", "result"] else ("events", rest[-1])
        problems += [f"{m.topic}: {e}" for e in errors(doc, schemas[kind])]
        batch = [e["seq"] for e in doc["events"]]
        if batch != sorted(set(batch)):
            problems.append(f"{m.topic}: batch not in seq order: {batch}")
        for event in doc["events"]:
            problems += [f"{m.topic} {event['type']}: {e}" for e in errors(event, event_schema)]
            if event["type"].split(".")[0] != family or (event["device"], event["site"]) != (DEVICE, SITE):
                problems.append(f"{m.topic}: carries {event['type']} of {event['device']}@{event['site']}")
            payload_schema = SCHEMAS / "events" / f"{event['type']}.json"
            if payload_schema.exists():
                checked.add(event["type"])
                problems += [f"{event['type']} payload: {e}" for e in
                             errors(event["payload"], json.loads(payload_schema.read_text()))]
            if seq_of_id.setdefault(event["id"], event["seq"]) != event["seq"]:
                problems.append(f"event id {event['id']} sent with two seqs")
            seqs.add((doc["store"], event["seq"]))
    stores = {store for store, _ in seqs}
    numbers = sorted(seq for _, seq in seqs)
    if len(stores) != 1 or numbers != list(range(numbers[0], numbers[-1] + 1)):
        problems.append(f"seqs over events/# and cmd/result are not one gapless run: stores {stores}, {numbers}")
    return problems, checked


def _results(collector) -> list[dict]:
    return [e["payload"] for m in collector.on_topic("/cmd/result") for e in m.json()["events"]]


def _alarms(collector) -> list[dict]:
    return [e["payload"] for e in collector.events("system.command_rejected")]


# --- tests ------------------------------------------------------------------------------------

def test_the_documented_canonical_form_reproduces_every_signing_vector():
    vectors = json.loads((REPO / "docs" / "signing-vectors.json").read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["key"]["seed_hex"]))
    for v in vectors["vectors"]:
        without = {k: val for k, val in v["document"].items() if k != "signatures"}
        assert canonical(without) == v["canonical_utf8"], v["name"]
        assert hashlib.sha256(canonical(without).encode()).hexdigest() == v["canonical_sha256"], v["name"]
        assert sign(v["document"], key) == v["signed_document"], v["name"]


def test_the_validator_is_not_vacuous():
    good = {"store": "s", "events": [{"id": "e1", "device": "d", "site": "x", "seq": 1, "type": "a.b",
                                      "source": "src", "ts": "2026-01-31T12:00:00Z", "payload": {}}]}
    schema = _schema("messages/deviceEvents.json")
    assert errors(good, schema) == []
    bad = json.loads(json.dumps(good))
    bad["extra"] = 1
    bad["events"][0].update(seq=0, ts="yesterday")
    del bad["events"][0]["id"]
    assert len(errors(bad, schema)) == 4


def test_a_real_gate_speaks_the_published_schemas(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    ops, ops_pub = trust_anchor(tmp_path / "keys", "ops")
    sec, sec_pub = trust_anchor(tmp_path / "keys", "sec")
    tty = tmp_path / "tty-lane1"
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(ops_pub), str(sec_pub)]},
        drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 20, "count": 3, "priority": "normal"},
                 {"name": "lane1-sim", "kind": "sim.turnstile", "codec": "rs485-bus", "path": str(tty),
                  "auto_pass": True, "baudrate": 115200},
                 {"name": "lane1", "kind": "turnstile.serial", "codec": "rs485-bus", "port": str(tty),
                  "baudrate": 115200, "state_file": str(tmp_path / "lane1.json")}])
    collector = mqtt_collector(mosquitto, [f"edge/v1/{SITE}/{DEVICE}/{t}" for t in ("events/#", "state", "cmd/result")])
    daemon = edge_daemon(base_config)
    collector.wait_for(lambda c: c.events("turnstile.online"), 20, "the lane's controller online")

    ping = sign(command("ping"), ops)
    grant = sign(sign(command("grant", "lane1", args={"direction": "in"}), ops), sec)
    unknown_field = sign(command("ping", note="x"), ops)
    topic = f"edge/v1/{SITE}/{DEVICE}/cmd"
    mqtt_publish.multiple([{"topic": topic, "payload": p, "qos": 1} for p in (
        json.dumps(ping), json.dumps(ping), json.dumps(grant), json.dumps(unknown_field), b"{not json")],
        hostname="127.0.0.1", port=mosquitto.port)

    collector.wait_for(lambda c: len(_alarms(c)) >= 3 and c.events("turnstile.passage"), 20,
                       "the rejection alarms and the granted passage")
    by_id = {r["id"]: r for r in _results(collector) if r["status"] != "rejected" or r["reason"] != "replay"}
    assert by_id[ping["id"]]["status"] == "ok" and by_id[ping["id"]]["result"]["pong"] is True
    assert by_id[grant["id"]]["status"] == "ok" and len(by_id[grant["id"]]["signed_by"]) == 2
    assert by_id[unknown_field["id"]]["reason"] == "malformed"
    assert [r["reason"] for r in _results(collector) if r["id"] == ping["id"]] == [None, "replay"]
    # The unreadable message: an alarm with id null, and no result (docs/commands.md "Results").
    assert any(a["id"] is None and a["reason"] == "malformed" for a in _alarms(collector))
    assert all(r["id"] is not None for r in _results(collector))

    assert daemon.stop() == 0
    collector.wait_for(lambda c: any(m.json()["online"] is False for m in c.on_topic("/state")), 10, "the death")
    problems, checked = contract_problems(collector.messages)
    assert problems == []
    assert {"command.result", "system.command_rejected", "turnstile.online", "turnstile.granted",
            "turnstile.passage"} <= checked
    states = [m.json() for m in collector.on_topic("/state")]
    birth, death = states[0], states[-1]
    stores = {m.json()["store"] for m in collector.messages if not m.topic.endswith("/state")}
    assert birth["online"] and stores == {birth["store_id"]}  # key gaps by (device, store, seq)
    assert (death["online"], death["reason"], death["boot_seq"]) == (False, "shutdown", birth["boot_seq"])


def test_the_rejection_limit_drops_results_and_alarms_but_never_a_valid_command(
        tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config):
    ops, ops_pub = trust_anchor(tmp_path / "keys", "ops")
    base_config.update(mqtt={"brokers": [mosquitto.uri]}, trust={"central_keys": [str(ops_pub)]},
                       commands={"rejections_per_minute": 2})
    collector = mqtt_collector(mosquitto, [f"edge/v1/{SITE}/{DEVICE}/cmd/result",
                                           f"edge/v1/{SITE}/{DEVICE}/events/system"])
    edge_daemon(base_config)
    unsigned = [command("ping") for _ in range(4)]
    ping = sign(command("ping"), ops)
    # One connection, QoS 1: the device takes them in this order, so the ping's result comes last.
    mqtt_publish.multiple([{"topic": f"edge/v1/{SITE}/{DEVICE}/cmd", "payload": json.dumps(d), "qos": 1}
                           for d in (*unsigned, ping)], hostname="127.0.0.1", port=mosquitto.port)
    collector.wait_for(lambda c: any(r["id"] == ping["id"] for r in _results(c)), 20, "the valid ping's result")
    rejected = [r for r in _results(collector) if r["status"] == "rejected"]
    assert [r["id"] for r in rejected] == [d["id"] for d in unsigned[:2]]
    assert [a["id"] for a in _alarms(collector)] == [d["id"] for d in unsigned[:2]]
    assert next(r for r in _results(collector) if r["id"] == ping["id"])["status"] == "ok"
