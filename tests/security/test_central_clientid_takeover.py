"""A compromised device connecting with central's ingest's MQTT client id, on a real mosquitto with
mTLS and the shipped ACL, against the real `edge central ingest`.

An MQTT broker disconnects a client when another connects with the same client id, and hands
the newcomer the session. With only `use_identity_as_username`, a device's certificate could
take the ingest's id (`edge-central-ingest-1`): the ingest was kicked off again and again, and
while the device held the session the broker dropped what it could not deliver to it under the
ACL, after PUBACKing it to the gates (measured: 8 of 40 events lost, never stored). The shipped
broker settings (config/mosquitto-test.conf, the site broker's device listener) make the client
id the certificate's CN, so the device only ever gets its own session.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.testing.central import IngestProcess, event
from edge.testing.certs import issue, make_ca
from edge.testing.wait import wait_for
from services.central.db import open_db

REPO = Path(__file__).resolve().parents[2]
SITE, GATE, ATTACKER = "hmp-example", "gate-north-1", "tab-1"


def _shipped_setting(name: str) -> str:
    lines = [line.strip() for line in (REPO / "config" / "mosquitto-test.conf").read_text().splitlines()
             if line.strip().startswith(name + " ")]
    assert lines, f"config/mosquitto-test.conf sets no {name}"
    return lines[0]


def test_a_device_cannot_take_over_the_ingests_session(tmp_path, mosquitto_factory):
    ca_cert, ca_key, ca = make_ca(tmp_path)
    server = issue(tmp_path, ca_cert, ca_key, "broker", server=True)
    certs = {n: issue(tmp_path, ca_cert, ca_key, n) for n in ("central", GATE, ATTACKER)}
    broker = mosquitto_factory(tls={"ca": ca["cert"], **server}, allow_anonymous=False,
                               acl=(REPO / "config" / "mosquitto-test.acl").read_text(),
                               extra=_shipped_setting("use_username_as_clientid"))
    url = str(tmp_path / "central.db")
    ingest = IngestProcess(tmp_path, broker.uri, url, "--ca-file", ca["cert"], "--cert-file",
                           certs["central"]["cert"], "--key-file", certs["central"]["key"]).start()

    def client(name: str, client_id: str) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.tls_set(ca_certs=ca["cert"], certfile=certs[name]["cert"], keyfile=certs[name]["key"],
                  cert_reqs=ssl.CERT_REQUIRED)
        return c

    stop, attempts = threading.Event(), []

    def attack() -> None:
        while not stop.is_set():
            c = client(ATTACKER, "edge-central-ingest-1")
            attempts.append(c.connect("127.0.0.1", broker.port, clean_start=False))
            c.loop_start()
            time.sleep(0.2)
            c.disconnect()
            c.loop_stop()

    gate = client(GATE, GATE)
    gate.connect("127.0.0.1", broker.port)
    gate.loop_start()
    thread = threading.Thread(target=attack)
    thread.start()
    try:
        for seq in range(1, 31):  # the positive control: a gate's events, all stored
            info = gate.publish(f"edge/v1/{SITE}/{GATE}/events/sim",
                                json.dumps({"events": [event(GATE, SITE, seq)]}), qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert len(attempts) >= 3 and all(rc == 0 for rc in attempts), "the attacker did connect, as itself"
    db = open_db(url)
    wait_for(lambda: db.query("SELECT COUNT(*) FROM events")[0][0] == 30, 30, "every gate event stored")
    assert db.gaps() == []
    assert ingest.log.read_text().count("central_connected") == 1, "the ingest was never disconnected"
    assert ingest.stop() == 0
    gate.disconnect()
    gate.loop_stop()
    db.close()
