"""Red team: one stolen signing key freezes a versioned document on a device, and the revocation must undo it.

Whoever holds one key of the ``directory`` role signs a resident directory with version 2**62 and a
PIN they know (and a contacts allowlist with their own contact, and a course catalog); whoever holds
one ``config`` key signs a remote config with that version. Central revokes the key. Before, the
forged document stayed in use and its version stayed the floor: every later genuine document was
refused as "not newer" until the device was also restarted. Now each holder checks its document
again when a revocation arrives: the forged one is dropped at once with an alarm, and central's next
genuine document, with a normal version, is taken, with no restart. Positive control: revoking an
unrelated key leaves every held document in place.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import signing
from edge.localapi.client import call_json
from edge.testing.wait import wait_for
from edge.trust.revocation import topic as revocation_topic
from edge.update.contract import EVENT_PAYLOADS as CONFIG_EVENTS
from edge.update.remote_config import build_document
from services.learning.contract import CatalogRejected
from services.learning.protocol import catalog_topic
from services.messaging.contract import CentralRefused
from services.residents.contract import DirectoryRefusedPayload
from tests._gate_helpers import events, wait_event
from tests._messaging_helpers import DIRECTORY_TOPIC, PINS, RESIDENT, SITE, Central, topic
from tests._remote_config_helpers import DEVICE as CONFIG_DEVICE
from tests._remote_config_helpers import publish as publish_config
from tests.security._redteam import revocation_list
from tests.test_messaging_daemon import Tablet, _config

STOLEN_VERSION = 2**62
ATTACKER_PIN = "111111"


@pytest.fixture
def publisher(mosquitto):
    from services.learning._link import StandaloneLink

    link = StandaloneLink(mosquitto.uri, client_id="central").start()
    yield link
    link.stop()


def _keypair(folder, name: str, roles=None):
    key, pub, _ = signing.generate_keypair(folder, name, roles)
    return signing.load_private_key(key), pub


def _catalog(key, version: int) -> bytes:
    now = datetime.now(UTC)
    doc = {"type": "learning.catalog", "site": SITE, "version": version, "issued_at": now.isoformat(),
           "expires_at": (now + timedelta(days=30)).isoformat(), "chunk_size": 4096, "courses": []}
    return json.dumps(signing.sign(doc, key)).encode()


def _login(tablet: Tablet, pin: str) -> tuple[int, dict]:
    return call_json(tablet.sock, "POST", "/v1/session", {"pseudonym": RESIDENT, "pin": pin})


def _contacts(tablet: Tablet, token: str) -> tuple[int, dict]:
    return call_json(tablet.sock, "GET", "/v1/messaging/contacts", headers={"Authorization": f"Bearer {token}"})


def _catalog_version(tablet: Tablet):
    return call_json(tablet.sock, "GET", "/v1/learning/status")[1]["catalog_version"]


def _logged(daemon, event: str, **fields) -> bool:
    for line in daemon.log_tail(10**7).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            return True
    return False


def test_a_revoked_directory_key_releases_the_tablets_documents_without_a_restart(
        tmp_path, mosquitto, edge_daemon, publisher):
    central = Central(tmp_path)  # central.key stays central's; central.key2 is the one stolen
    retired, retired_pub = _keypair(tmp_path / "keys", "retired")
    config = _config(mosquitto, central)
    config["trust"]["central_keys"].append(str(retired_pub))
    config["residents"] = {"min_answer_s": 0.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                           "max_failures": 50, "tablet_free_failures": 50}
    daemon = edge_daemon(config, start=False)
    central.provision(daemon)

    def genuine(version: int) -> None:
        publisher.publish(DIRECTORY_TOPIC, central.directory(version), retain=True)
        publisher.publish(topic("contacts"), central.contacts(version), retain=True)
        publisher.publish(catalog_topic(SITE), _catalog(central.key, version), retain=True)

    genuine(1)
    tablet = Tablet(daemon.start())
    wait_for(tablet.ready, what="directory and contacts applied", timeout=45)
    wait_for(lambda: _catalog_version(tablet) == 1, what="catalog 1 applied")
    central.learn_device_key(mosquitto)
    pid = daemon.proc.pid

    # Positive control: revoking a key that signed none of them leaves all three in place. The
    # directory is checked before the list's event is recorded; contacts and catalog are checked on
    # their worker threads, so what those handle next (a message, a catalog) comes after the check.
    publisher.publish(revocation_topic(SITE), revocation_list(1, [retired], central.key), retain=True)
    wait_event(daemon.state_dir, "trust.revocations_applied", what="the unrelated revocation")
    msg_id, sealed = central.inbound("Your visit is on Tuesday")
    publisher.publish(topic("in"), sealed)
    wait_for(lambda: msg_id in {m["id"] for m in tablet.api("GET", "/v1/messaging/messages")[1]["messages"]},
             what="a message to the resident stored: the contacts are still held")
    publisher.publish(catalog_topic(SITE), _catalog(Ed25519PrivateKey.generate(), 2))  # a stranger's
    probe = wait_event(daemon.state_dir, "learning.catalog_rejected", what="the stranger's catalog refused")
    assert probe["payload"]["kept_version"] == 1, probe
    assert _login(tablet, PINS[RESIDENT])[0] == 201
    assert not events(daemon.state_dir, "resident.directory_refused")
    assert not events(daemon.state_dir, "message.central_refused")

    # The attack: the stolen key signs all three with a huge version; the attacker knows the PIN.
    publisher.publish(DIRECTORY_TOPIC, central.directory(STOLEN_VERSION, {RESIDENT: (ATTACKER_PIN, "active")},
                                                         key=central.key2), retain=True)
    publisher.publish(topic("contacts"), central.contacts(
        STOLEN_VERSION, {RESIDENT: [{"id": "c-outside", "name": "Outside help"}]}, key=central.key2), retain=True)
    publisher.publish(catalog_topic(SITE), _catalog(central.key2, STOLEN_VERSION), retain=True)
    wait_for(lambda: _logged(daemon, "residents_directory_applied", version=STOLEN_VERSION), what="forged directory")
    code, session = _login(tablet, ATTACKER_PIN)
    assert code == 201, session
    wait_for(lambda: [c["id"] for c in _contacts(tablet, session["token"])[1]["contacts"]] == ["c-outside"],
             what="the forged contacts in use")
    wait_for(lambda: _catalog_version(tablet) == STOLEN_VERSION, what="the forged catalog in use")

    # Central revokes the stolen key: all three are dropped at once, each with its alarm.
    publisher.publish(revocation_topic(SITE), revocation_list(2, [central.key2], central.key), retain=True)
    dropped = [
        wait_event(daemon.state_dir, "resident.directory_refused", lambda e: "dropped" in e["payload"]["reason"],
                   what="the directory dropped"),
        wait_event(daemon.state_dir, "message.central_refused",
                   lambda e: e["payload"]["kind"] == "contacts" and "dropped" in e["payload"]["reason"],
                   what="the contacts dropped"),
        wait_event(daemon.state_dir, "learning.catalog_rejected", lambda e: e["payload"]["kept_version"] is None,
                   what="the catalog dropped"),
    ]
    for event, model in zip(dropped, (DirectoryRefusedPayload, CentralRefused, CatalogRejected), strict=True):
        assert event["priority"] == "alarm" and str(STOLEN_VERSION) in event["payload"]["reason"], event
        model.model_validate(event["payload"])
    assert _contacts(tablet, session["token"])[0] == 401  # the attacker's session ended with the directory
    assert _login(tablet, ATTACKER_PIN)[0] == 401
    assert _catalog_version(tablet) is None

    # Central's next genuine documents, with a normal version, are taken: no restart needed.
    genuine(2)
    wait_for(lambda: _logged(daemon, "residents_directory_applied", version=2), what="genuine directory 2")
    wait_for(lambda: _logged(daemon, "messaging_contacts_applied", version=2), what="genuine contacts 2")
    wait_for(lambda: _catalog_version(tablet) == 2, what="genuine catalog 2")
    code, session = _login(tablet, PINS[RESIDENT])
    assert code == 201, session
    assert [c["id"] for c in _contacts(tablet, session["token"])[1]["contacts"]] == ["c-lawyer", "c-mum"]
    assert _login(tablet, ATTACKER_PIN)[0] == 401
    assert daemon.proc.pid == pid and daemon.running and daemon.starts == 1


def test_a_revoked_config_key_releases_the_config_version_floor_without_a_restart(
        tmp_path, mosquitto, edge_daemon, base_config):
    central, central_pub = _keypair(tmp_path / "keys", "central", ["config"])
    stolen, stolen_pub = _keypair(tmp_path / "keys", "stolen", ["config"])
    retired, retired_pub = _keypair(tmp_path / "keys", "retired", ["command"])
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(central_pub), str(stolen_pub), str(retired_pub)]},
        remote_config={"enabled": True, "health_deadline_s": 6},
        drivers=[{"name": "hb1", "kind": "sim.heartbeat", "rate": 5}])
    daemon = edge_daemon(base_config)
    pid, state = daemon.proc.pid, daemon.state_dir

    def config(rate: int, version: int, key) -> dict:
        return build_document({"drivers.hb1.rate": rate}, site=SITE, device=CONFIG_DEVICE, version=version,
                              keys=[key])

    def outcome(type_: str, pred) -> dict:
        return wait_event(state, type_, pred, what=type_)

    publish_config(mosquitto, config(9, 1, central))
    outcome("config.applied", lambda e: e["payload"]["version"] == 1)
    publish_config(mosquitto, config(7, STOLEN_VERSION, stolen))  # the attack
    outcome("config.applied", lambda e: e["payload"]["version"] == STOLEN_VERSION)

    # Positive control: an unrelated revocation leaves the floor where it is (the retained genuine
    # document 2, handled after the check, is still refused as not newer).
    revocations = revocation_topic(SITE)
    publish_config(mosquitto, revocation_list(1, [retired], central), topic=revocations)
    outcome("trust.revocations_applied", lambda e: True)
    publish_config(mosquitto, config(3, 2, central))
    outcome("config.refused", lambda e: e["payload"]["problem"] == "replayed")

    # Central revokes the stolen key: the forged document is dropped, the floor falls back to the
    # last good document (1, kept in its place); the running settings stay.
    publish_config(mosquitto, revocation_list(2, [stolen], central), topic=revocations)
    dropped = outcome("config.refused", lambda e: e["payload"]["problem"] == "dropped")
    assert dropped["priority"] == "alarm" and "floor is now 1" in dropped["payload"]["detail"], dropped
    CONFIG_EVENTS["config.refused"].model_validate(dropped["payload"])
    assert json.loads((state / "remote-config.json").read_text())["applied"] == 1
    assert json.loads((daemon.workdir / "edge.remote.json").read_text())["version"] == 1
    assert json.loads((daemon.workdir / "edge.remote.dropped.json").read_text())["version"] == STOLEN_VERSION

    # Central's next genuine document (2, refused before) is taken now, with no restart.
    publish_config(mosquitto, config(3, 2, central))
    outcome("config.applied", lambda e: e["payload"]["version"] == 2)
    assert daemon.proc.pid == pid and daemon.running and daemon.starts == 1
