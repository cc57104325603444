"""Issue 17 acceptance, part 2: the generated broker ACL, walked channel by channel on a real mosquitto.

For every channel of docs/asyncapi.json: the owning device succeeds; another device of
the same site (unless the channel is site-wide), a device of another site and a client
without a certificate are refused, and the refusal is the broker's own answer (a PUBACK
or SUBACK reason code, or a refused handshake), with central's view as the witness.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt.acl import Inventory, InventoryError, channel_rules, render
from edge.testing.certs import issue

REPO = Path(__file__).resolve().parents[2]
ASYNCAPI = json.loads((REPO / "docs" / "asyncapi.json").read_text())
# The shipped ACL itself (drift-tested below against scripts/gen_acl.py) and its example inventory.
SHIPPED_ACL = (REPO / "config" / "mosquitto-test.acl").read_text()
INVENTORY = Inventory.load(REPO / "config" / "broker-inventory.sample.toml")
OWNER, NEIGHBOUR, FOREIGN = ("hmp-example", "gate-north-1"), ("hmp-example", "tab-1"), ("hmp-other", "gate-south-1")
NOT_AUTHORIZED = 0x87
OK = (0, 0x10)  # accepted; 0x10 = accepted, no subscriber matched


class Client:
    """A bare MQTT 5 client that reports the broker's reason codes."""

    def __init__(self, broker, tls: dict, cert: dict | None, name: str, wait: bool = True):
        self.messages: list[tuple[str, bytes, bool]] = []
        self._acks: dict[int, int] = {}
        self._cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:6]}",
                             protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=tls["ca"], certfile=cert and cert["cert"], keyfile=cert and cert["key"],
                       cert_reqs=ssl.CERT_REQUIRED)
        self.c.on_publish = lambda c, u, mid, rc, p: self._ack(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._ack(mid, rcs[0].value)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda *a: self._notify()
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()
        if wait:
            self._wait_connected()

    def _wait_connected(self) -> None:
        with self._cond:
            assert self._cond.wait_for(self.c.is_connected, timeout=10), "did not connect"

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _ack(self, mid: int, rc: int) -> None:
        with self._cond:
            self._acks[mid] = rc
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def _result(self, mid: int) -> int:
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._acks, timeout=10), "no ack from the broker"
            return self._acks.pop(mid)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """The PUBACK reason code: 0 accepted, 0x87 not authorized."""
        return self._result(self.c.publish(topic, payload, qos=1, retain=retain).mid)

    def subscribe(self, topic: str) -> int:
        """The SUBACK reason code: 1 granted QoS 1, 0x87 not authorized."""
        return self._result(self.c.subscribe(topic, qos=1)[1])

    def wait_for(self, payload: bytes, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(m[1] == payload for m in self.messages), timeout=timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def estate(tmp_path, mosquitto_factory):
    from edge.testing.certs import make_ca

    ca_cert, ca_key, ca = make_ca(tmp_path)
    tls = {"ca": ca["cert"]}
    server = issue(tmp_path, ca_cert, ca_key, "broker", server=True)
    certs = {n: issue(tmp_path, ca_cert, ca_key, n) for n in ("central", OWNER[1], NEIGHBOUR[1], FOREIGN[1])}
    broker = mosquitto_factory(tls={"ca": tls["ca"], **server}, acl=SHIPPED_ACL,
                               allow_anonymous=False)
    clients: list[Client] = []

    def connect(name: str) -> Client:
        client = Client(broker, tls, certs[name], name)
        clients.append(client)
        return client

    yield broker, tls, connect
    for client in clients:
        client.close()


def _topic(address: str, who: tuple[str, str]) -> str:
    return address.replace("{site}", who[0]).replace("{device}", who[1]).replace("{family}", "system")


def test_every_channel_only_for_its_owner(estate):
    broker, tls, connect = estate
    central = connect("central")
    # Readers only subscribe. mosquitto drops a connection after refusing its publish, so
    # every publish a device tries is made on a connection of its own (a probe).
    readers = {who: connect(who[1]) for who in (OWNER, NEIGHBOUR, FOREIGN)}
    for who, client in readers.items():  # each device's own command topic carries the fences
        assert client.subscribe(_topic("edge/v1/{site}/{device}/cmd", who)) == 1

    def probe(who, topic: str, payload: bytes, retain: bool = False) -> int:
        client = connect(who[1])
        try:
            return client.publish(topic, payload, retain)
        finally:
            client.close()

    fences: set[bytes] = set()

    def fence() -> None:
        """Central writes to every device's own cmd topic; once each has it, anything the
        broker was going to deliver before it has been delivered (one ordered queue per client)."""
        marker = uuid.uuid4().hex.encode()
        fences.add(marker)
        for who, client in readers.items():
            assert central.publish(_topic("edge/v1/{site}/{device}/cmd", who), marker) in OK
            assert client.wait_for(marker), who

    rules = channel_rules(ASYNCAPI)
    assert len(rules) == len(ASYNCAPI["channels"]) >= 16
    for action, address in rules:
        topic = _topic(address, OWNER)
        site_wide = "{device}" not in address
        allowed = {OWNER, NEIGHBOUR} if site_wide else {OWNER}
        for client in (central, *readers.values()):
            client.subscribe(topic)  # mosquitto 2.0 grants any subscription; delivery is what it checks
        if action == "send":
            for who in readers:
                rc = probe(who, topic, f"{who[1]} on {topic}".encode())
                assert (rc in OK) == (who in allowed) and rc in (*OK, NOT_AUTHORIZED), (who, topic, hex(rc))
            fence()
            seen = {p for t, p, _ in central.messages if t == topic}
            assert seen == {f"{w[1]} on {topic}".encode() for w in allowed}, topic
            for who, client in readers.items():  # devices never read what devices send
                assert not [m for m in client.messages if m[0] == topic], (who, topic)
        else:
            for who in readers:  # nobody but central writes an inbound topic, not even its owner
                assert probe(who, topic, b"forged", retain=True) == NOT_AUTHORIZED, (who, topic)
            payload = f"central on {topic}".encode()
            assert central.publish(topic, payload) in OK, topic
            fence()
            for who, client in readers.items():
                got = [p for t, p, _ in client.messages if t == topic and p not in fences]
                assert got == ([payload] if who in allowed else []), (who, topic, got)


def test_central_retained_documents_cannot_be_replaced_by_a_device(estate):
    broker, tls, connect = estate
    central, owner = connect("central"), connect(OWNER[1])
    topic = _topic("edge/v1/{site}/{device}/msg/contacts", OWNER)
    assert central.publish(topic, b"central's list", retain=True) in OK
    assert owner.publish(topic, b"my own list", retain=True) == NOT_AUTHORIZED
    late = connect(OWNER[1])
    late.subscribe(topic)
    assert late.wait_for(b"central's list")
    assert not any(p == b"my own list" for _, p, _ in late.messages)


def test_a_client_without_a_certificate_is_refused_at_the_handshake(estate):
    broker, tls, connect = estate
    try:
        anonymous = Client(broker, tls, None, "anonymous", wait=False)
    except (ssl.SSLError, OSError):
        anonymous = None  # refused before connect() even returned
    deadline = time.monotonic() + 10
    while "peer did not return a certificate" not in broker.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "peer did not return a certificate" in broker.log.read_text()
    if anonymous is not None:
        assert not anonymous.c.is_connected()
        anonymous.c.loop_stop()
    assert connect(OWNER[1]).publish(_topic("edge/v1/{site}/{device}/state", OWNER), b"up") in OK  # control


def test_inventory_refuses_colliding_and_duplicate_ids():
    for bad, match in ((Inventory(["central"], {"s": ["cmd"]}), "collides with the site-level topic"),
                       (Inventory(["central"], {"s": ["gallery"]}), "collides"),
                       (Inventory(["central"], {"s": ["central"]}), "already central"),
                       (Inventory([], {"s": ["d1"], "t": ["d1"]}), "must be unique"),
                       (Inventory([], {"s": ["a+b"]}), "not a valid id")):
        with pytest.raises(InventoryError, match=match):
            bad.check()


def test_site_level_names_match_the_contract():
    from edge.mqtt.topics import SITE_LEVEL_NAMES

    site_wide = {a.split("/")[3] for _, a in channel_rules(ASYNCAPI) if "{device}" not in a.split("/")[3:4]}
    assert site_wide - {"{device}"} == SITE_LEVEL_NAMES


def test_shipped_acl_is_generated_and_has_not_drifted():
    got = subprocess.run([sys.executable, str(REPO / "scripts" / "gen_acl.py"), "--check"],
                         capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    shipped = (REPO / "config" / "mosquitto-test.acl").read_text()
    assert shipped == render(ASYNCAPI, INVENTORY, "broker-inventory.sample.toml")
    assert "\npattern " not in shipped and "%u" not in shipped  # every rule names its identity and site


def test_a_device_id_that_collides_with_a_site_topic_is_refused_at_start(tmp_path):
    from edge.cli._app import cli  # noqa: F401 - the same entry point as `edge`

    config = tmp_path / "edge.toml"
    config.write_text(f'device_id = "gallery"\nsite = "s1"\nrole = "gate"\nstate_dir = "{tmp_path}/state"\n')
    got = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "config", "check"],
                         capture_output=True, text=True)
    assert got.returncode == 78 and "device_id" in got.stderr + got.stdout and "collides" in got.stderr + got.stdout
