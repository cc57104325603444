"""The contract: docs/asyncapi.json matches the models, and what devices publish matches the contract."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from edge.asyncapi import build, render
from edge.contract import CHANNELS, CommandResultBatch, DeviceStateMessage, EventBatch

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "asyncapi.json"


def test_committed_document_matches_the_models():
    assert DOC.read_text() == render(), "docs/asyncapi.json drifted: run scripts/gen_asyncapi.py and commit it"
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_asyncapi.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_drift_is_detected(tmp_path):
    stale = tmp_path / "asyncapi.json"
    doc = json.loads(render())
    doc["components"]["schemas"]["Command"]["properties"].pop("expires_at")
    stale.write_text(json.dumps(doc))
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_asyncapi.py"), "--check",
                            "--out", str(stale)], capture_output=True, text=True)
    assert check.returncode == 1 and "out of date" in check.stderr


def _refs(node, found: list[str]) -> list[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            found.append(node["$ref"])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)
    return found


def test_document_is_self_consistent():
    doc = build()
    assert doc["asyncapi"] == "3.0.0"
    for ref in _refs(doc, []):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, f"dangling $ref {ref}"
            node = node[part]
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"edge/v1/{site}/{device}/events/{family}", "edge/v1/{site}/{device}/state",
            "edge/v1/{site}/{device}/cmd", "edge/v1/{site}/cmd", "edge/v1/{site}/{device}/cmd/result"} <= addresses
    ops = doc["operations"]
    assert ops["sendDeviceState"]["bindings"]["mqtt"]["retain"] is True
    assert all(op["bindings"]["mqtt"]["qos"] == 1 for op in ops.values())
    assert "$share/ingest/edge/v1/+/+/events/#" in doc["info"]["description"]
    assert len({c.id for c in CHANNELS}) == len(CHANNELS)


def test_device_state_payloads_match_the_contract(tmp_path, base_config):
    from edge.config import Settings
    from edge.mqtt.state import DeviceState

    class Link:  # DeviceState only registers its will and a listener at construction
        def set_will(self, topic, payload):
            self.will = payload

        def add_connection_listener(self, fn):
            pass

    link = Link()
    state = DeviceState(link, Settings(**base_config), None, health=lambda: {"hb": {"status": "ok"}})
    birth = DeviceStateMessage.model_validate_json(state.birth())
    death = DeviceStateMessage.model_validate_json(link.will)
    assert birth.online and not death.online and birth.boot_seq == death.boot_seq
    assert death.reason == "connection_lost"


def test_shared_subscription_delivers_each_event_to_exactly_one_consumer(mosquitto, mqtt_collector,
                                                                          edge_daemon, base_config):
    total = 300  # each emit is one fsync: enough messages (30) to show the split, quickly
    share = "$share/ingest/edge/v1/+/+/events/#"
    consumers = [mqtt_collector(mosquitto, share), mqtt_collector(mosquitto, share)]
    base_config["mqtt"] = {"brokers": [mosquitto.uri], "batch_max_events": 10}
    # Three producers, so the store folds their appends into shared commits (one fsync each).
    base_config["drivers"] = [{"name": f"hb{i}", "kind": "sim.heartbeat", "rate": 0, "count": total // 3,
                               "event_type": "sim.beat", "priority": "normal"} for i in range(3)]
    edge_daemon(base_config)

    def all_arrived(_c):
        return sum(len(c.events("sim.beat")) for c in consumers) >= total

    # Each collector only wakes on its own messages: wait on both in short turns.
    deadline = time.monotonic() + 90
    while not all_arrived(None):
        assert time.monotonic() < deadline, f"only {sum(len(c.events()) for c in consumers)} of {total} arrived"
        for c in consumers:
            try:
                c.wait_for(all_arrived, 0.2)
            except TimeoutError:
                pass
    ids = [[e["id"] for e in c.events("sim.beat")] for c in consumers]
    assert all(ids), "both consumers must get a share of the stream"
    assert not set(ids[0]) & set(ids[1]), "an event reached both consumers"
    assert len(ids[0]) + len(ids[1]) == len(set(ids[0]) | set(ids[1])) == total
    seqs = sorted(e["seq"] for c in consumers for e in c.events("sim.beat"))
    assert seqs == list(range(seqs[0], seqs[0] + total))  # no gap: central can check by seq
    for c in consumers:  # what the uplink publishes is what the contract says
        for message in c.messages:
            EventBatch.model_validate_json(message.payload)


def test_command_results_match_the_contract(mosquitto, mqtt_collector, edge_daemon, base_config):
    from edge.commands.local import send

    base_config["mqtt"] = {"brokers": [mosquitto.uri]}
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/cmd/result")
    daemon = edge_daemon(base_config)
    result = send(daemon.state_dir, "edge", "ping")
    message = collector.wait_for(lambda c: c.on_topic("/cmd/result"), 20, "a command result")[0]
    batch = CommandResultBatch.model_validate_json(message.payload)
    assert batch.events[0].payload.id == result["id"] and batch.events[0].payload.status == "ok"
