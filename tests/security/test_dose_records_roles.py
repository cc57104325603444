"""Dose records from central are accepted only from a key with the ``directory`` role.

Attack: a key that may only sign course catalogs signs dose records that lower a person's
dose at another site (so that they may be scanned again). Against the real daemon and a real
broker; positive control: the same records signed by a directory key are applied.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import paho.mqtt.publish as publish

from edge.signing import generate_keypair, load_private_key, sign

SITE, DEVICE = "site-1", "dev-1"


def _records(subject: str, usv: float) -> dict:
    now = datetime.now(UTC).isoformat()
    return {"type": "xray.dose_records", "site": SITE, "issued_at": now,
            "subjects": [{"subject": subject, "origins": [{"site": "site-2", "total_usv": usv, "as_of": now}]}]}


def test_a_catalog_key_cannot_sign_dose_records_a_directory_key_can(tmp_path, mosquitto, mqtt_collector,
                                                                     edge_daemon, base_config):
    catalog_key, catalog_pub, _ = generate_keypair(tmp_path / "keys", "catalogs", roles=["catalog"])
    directory_key, directory_pub, _ = generate_keypair(tmp_path / "keys", "directory", roles=["directory"])
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(catalog_pub), str(directory_pub)]},
        drivers=[{"name": "xr", "kind": "xray.folder", "path": str(tmp_path / "inbox")}])
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    daemon = edge_daemon(base_config)
    topic = f"edge/v1/{SITE}/xray/dose"

    forged = sign(_records("A1234BC", 240.0), load_private_key(catalog_key))
    publish.single(topic, json.dumps(forged), qos=1, hostname="127.0.0.1", port=mosquitto.port)
    rejected = collector.wait_for(lambda c: c.events("xray.dose_records_rejected"), 20, "the refusal")
    assert rejected[0]["priority"] == "alarm" and "signature" in rejected[0]["payload"]["reason"]
    check = json.loads(daemon.cli("xray", "check", "A1234BC", "--json").stdout)
    assert check["total_usv"] == 0.0  # nothing of the forged records was counted

    good = sign(_records("A1234BC", 240.0), load_private_key(directory_key))
    publish.single(topic, json.dumps(good), qos=1, hostname="127.0.0.1", port=mosquitto.port)
    collector.wait_for(lambda c: c.events("xray.dose_records_applied"), 20, "the records applied")
    check = json.loads(daemon.cli("xray", "check", "A1234BC", "--json").stdout)
    assert check["total_usv"] == 240.0
