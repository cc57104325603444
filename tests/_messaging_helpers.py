"""Central's side of messaging for the tests: signed documents, sealed-message opening."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from edge import sealing, signing
from services.messaging._crypto import generate_seal_keypair, load_seal_private_key, open_sealed
from services.residents.directory import make_verifier

SITE, DEVICE = "site-1", "tab-1"
RESIDENT, OTHER = "res-7f3k9q", "res-2b8w1z"
PINS = {RESIDENT: "482193", OTHER: "773051"}


class Central:
    def __init__(self, root: Path):
        key_path, self.pub, _ = signing.generate_keypair(root / "keys", "central")
        self.key = signing.load_private_key(key_path)
        key2_path, self.pub2, _ = signing.generate_keypair(root / "keys", "central-2")  # the second person
        self.key2 = signing.load_private_key(key2_path)
        seal_key, self.seal_pub = generate_seal_keypair(root / "keys", "central")
        self.seal_private = load_seal_private_key(seal_key)
        self.device_keys: dict[str, bytes] = {}  # device id -> X25519 public key, from birth messages

    def learn_device_key(self, broker, device: str = DEVICE) -> bytes:
        """Central's device registry: the seal key from the device's retained birth message."""
        from edge.testing.collector import MqttCollector

        collector = MqttCollector("127.0.0.1", broker.port, f"edge/v1/{SITE}/{device}/state", session=False).start()
        try:
            births = collector.wait_for(lambda c: [m.json() for m in c.on_topic("state") if m.json().get("online")],
                                        what="birth message with seal_key")
        finally:
            collector.stop()
        key = base64.b64decode(births[-1]["seal_key"])
        assert self.device_keys.setdefault(device, key) == key, "the birth message names another seal key"
        return key

    def now(self) -> str:
        return datetime.now(UTC).isoformat()

    def contacts(self, version: int = 1, residents: dict | None = None, seal: bool = True, key=None) -> bytes:
        residents = residents or {
            RESIDENT: [{"id": "c-mum", "name": "Mum"}, {"id": "c-lawyer", "name": "J. Counsel", "privileged": True}],
            OTHER: [{"id": "c-bro", "name": "Brother"}]}
        doc = {"type": "messaging.contacts", "site": SITE, "device": DEVICE, "version": version,
               "issued_at": self.now(),
               "residents": [{"resident": r, "contacts": cs} for r, cs in residents.items()]}
        signed = json.dumps(signing.sign(doc, key or self.key)).encode()
        return self._sealed(signed) if seal else signed

    def _sealed(self, signed: bytes, device: str = DEVICE) -> bytes:
        return sealing.sealed_message(signed, {device: self.device_keys[device]})

    def provision(self, daemon, device: str = DEVICE) -> None:
        """What provisioning does before a device's first start: make its seal key and
        register the public half with central (the birth message then repeats it)."""
        self.device_keys[device] = sealing.device_key(daemon.state_dir).public_raw

    def directory(self, version: int = 1, residents: dict | None = None, device: str = DEVICE,
                  seal: bool = True, key=None) -> bytes:
        """The signed resident directory: {pseudonym: (pin, status)}; default both residents active;
        signed with ``key`` (default central's first key)."""
        residents = residents or {name: (pin, "active") for name, pin in PINS.items()}
        doc = {"type": "residents.directory", "site": SITE, "device": device, "version": version,
               "issued_at": self.now(),
               "residents": [{"pseudonym": name, "status": status, "verifier": make_verifier(pin)}
                             for name, (pin, status) in residents.items()]}
        signed = json.dumps(signing.sign(doc, key or self.key)).encode()
        return self._sealed(signed) if seal else signed

    def status(self, message_id: str, state: str, reason: str | None = None, sign: bool = True) -> bytes:
        doc = {"type": "messaging.status", "device": DEVICE, "message_id": message_id, "state": state,
               "at": self.now()}
        if reason:
            doc["reason"] = reason
        return json.dumps(signing.sign(doc, self.key) if sign else doc).encode()

    def inbound(self, body: str, resident: str = RESIDENT, contact: str = "c-mum", msg_id: str | None = None,
                attachments: list[tuple[str, bytes]] = (), privileged: bool = False,
                seal: bool = True) -> tuple[str, bytes]:
        msg_id = msg_id or str(uuid.uuid4())
        doc = {"type": "messaging.in", "id": msg_id, "device": DEVICE, "resident": resident, "contact": contact,
               "body": body, "sent_at": self.now(), "privileged": privileged,
               "attachments": [{"media_type": t, "data": base64.b64encode(d).decode()} for t, d in attachments]}
        signed = json.dumps(signing.sign(doc, self.key)).encode()
        return msg_id, self._sealed(signed) if seal else signed

    def open(self, event: dict) -> dict:
        p = event["payload"]
        return json.loads(open_sealed(self.seal_private, p["sealed"], aad=p["message_id"]))


def topic(leaf: str) -> str:
    return f"edge/v1/{SITE}/{DEVICE}/msg/{leaf}"


DIRECTORY_TOPIC = f"edge/v1/{SITE}/{DEVICE}/residents/directory"
