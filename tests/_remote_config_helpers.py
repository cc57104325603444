"""Remote config test fixtures: keys, a device config with two heartbeat drivers, publishing."""

from __future__ import annotations

import json
import time

import paho.mqtt.publish as mqtt_publish
import pytest

from edge.signing import generate_keypair, load_private_key
from tests._gate_helpers import events

SITE, DEVICE = "site-1", "dev-1"


@pytest.fixture
def keys(tmp_path):
    out = {}
    for name, roles in (("config", ["config"]), ("commands", ["command"])):
        key, pub, _ = generate_keypair(tmp_path / "keys", name, roles)
        out[name] = (load_private_key(key), pub)
    return out


@pytest.fixture
def device_config(mosquitto, base_config, keys):
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(keys["commands"][1]), str(keys["config"][1])]},
        remote_config={"enabled": True, "health_deadline_s": 6},
        drivers=[{"name": "hb1", "kind": "sim.heartbeat", "rate": 5},
                 {"name": "hb2", "kind": "sim.heartbeat", "rate": 5}])
    return base_config


def publish(broker, doc, topic=f"edge/v1/{SITE}/{DEVICE}/config", tls: dict | None = None) -> None:
    """``doc`` retained on ``topic``, as central publishes it (``tls``: paho's ca_certs, certfile, keyfile)."""
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    mqtt_publish.single(topic, payload, qos=1, retain=True, hostname="127.0.0.1", port=broker.port, tls=tls)


def wait_events(daemon, glob, n=1, timeout=40.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(daemon.state_dir, glob)
        if len(found) >= n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} {glob} events:\n{daemon.log_tail()}")
