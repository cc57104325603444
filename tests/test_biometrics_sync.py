"""Gallery sync from central through a real mosquitto: snapshot, upsert, revoke, catch-up, forgery."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from drivers.camera.contract import GallerySnapshot, GalleryUpdate
from drivers.camera.decide import Decider
from drivers.camera.gallery import Gallery
from drivers.camera.sync import GallerySync
from edge import sealing, signing
from edge.config import Settings
from edge.mqtt import MqttLink
from edge.testing.wait import wait_for
from tests._face_helpers import conforms, encoding, template

SITE = "site-1"
PREFIX = f"edge/v1/{SITE}/gallery"


def subject_doc(sid: str, photo: str, role: str = "staff", **window) -> dict:
    return {"subject_id": sid, "role": role, "templates": [base64.b64encode(template(photo)).decode()],
            **{k: v.isoformat() for k, v in window.items()}}


class Central:
    """Central's side: signs gallery documents and publishes them (QoS 1, waits for PUBACK).
    ``keys``: every one signs (making someone staff needs two distinct gallery keys)."""

    def __init__(self, broker, keys, root=None):
        self.keys = list(keys)
        self.root = root
        self.extra_recipients: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-{uuid.uuid4().hex[:6]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.requests.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{PREFIX}/request", qos=1)

    def publish(self, kind: str, doc: dict, *, sign: bool = True, retain: bool = False) -> None:
        body = doc
        for key in self.keys if sign else ():
            body = signing.sign(body, key)
        if sign:  # what central sends is what the contract documents
            model = GallerySnapshot if kind == "snapshot" else GalleryUpdate
            model.model_validate(body)
        # Sealed to every device of the site (central's registry: their birth messages' seal_key).
        wire = sealing.sealed_message(json.dumps(body).encode(), self.recipients)
        info = self.client.publish(f"{PREFIX}/{kind}", wire, qos=1, retain=retain)
        info.wait_for_publish(10)

    @property
    def recipients(self) -> dict[str, bytes]:
        """Every device folder under the test's root: their keys, as central's registry holds them."""
        found = {p.name: sealing.device_key(p).public_raw for p in sorted(self.root.iterdir())
                 if (p / "secrets" / sealing.KEY_FILE).exists()}
        return {**found, **self.extra_recipients}

    def snapshot(self, epoch: int, version: int, subjects: list[dict], vouched: list[dict] = ()) -> None:
        self.publish("snapshot", {"site": SITE, "epoch": epoch, "version": version,
                                  "issued_at": datetime.now(UTC).isoformat(), "subjects": subjects,
                                  "local_enrollments": list(vouched)}, retain=True)

    def upsert(self, epoch: int, version: int, subject: dict, **kw) -> None:
        self.publish("update", {"site": SITE, "epoch": epoch, "version": version, "op": "upsert",
                                "subject": subject}, **kw)

    def revoke(self, epoch: int, version: int, sid: str) -> None:
        self.publish("update", {"site": SITE, "epoch": epoch, "version": version, "op": "revoke",
                                "subject_id": sid})

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def central_key(tmp_path):
    """Central's two gallery keys: ([private keys], [public key files])."""
    made = [signing.generate_keypair(tmp_path / "keys", name) for name in ("central", "central-2")]
    return [signing.load_private_key(k) for k, _pub, _ in made], [pub for _k, pub, _ in made]


@pytest.fixture
def make_device(tmp_path, mosquitto, central_key):
    """``make_device(name)``: a device's MQTT link and gallery sync; ``.stop()`` / ``.start()``."""
    made = []

    def make(name: str = "gate-1"):
        settings = Settings(device_id=name, site=SITE, role="gate", state_dir=tmp_path / name,
                            mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.05, "backoff_max_s": 0.5},
                            trust={"central_keys": central_key[1]})
        d = Device(settings, signing.load_public_keys(central_key[1])).start()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def device(make_device):
    return make_device("gate-1")


class Device:
    def __init__(self, settings: Settings, trusted: dict):
        self.settings, self.trusted = settings, trusted
        self.state_dir = settings.state_dir
        self.events: list[tuple[str, dict]] = []
        self.running = False

    def start(self):
        self.link = MqttLink(self.settings, device_state=False)
        self.sync = GallerySync(self.state_dir, SITE, self.settings.device_id, self.link, self.trusted,
                                emit=lambda t, p, prio, src: self.events.append((t, p)))
        self.sync.start()  # as in the daemon: handlers are registered before the session resumes
        self.link.start()
        assert self.link.wait_connected(10)
        # Each test's first document is the retained snapshot: it arrives whenever the
        # SUBACK lands, and waiting for its version proves the subscriptions are live.
        self.running = True
        return self

    def stop(self):
        if self.running:
            self.link.stop()
            self.sync.stop()
            self.running = False

    def wait_version(self, version: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sync.state.get("version") == version and self.sync.idle.wait(0.05):
                return
            time.sleep(0.02)
        raise AssertionError(f"gallery at {self.sync.status()}, expected version {version}")

    def wait_rejected(self, n: int, timeout: float = 10.0) -> None:
        wait_for(lambda: self.sync.rejected >= n, timeout, f"{n} documents rejected")


def ids(state_dir) -> set[str]:
    g = Gallery(state_dir)
    try:
        return {s.subject_id for s in g.subjects()}
    finally:
        g.close()


def test_snapshot_upsert_revoke_and_a_revoke_wins_before_the_next_decision(device, mosquitto, central_key, tmp_path):
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        central.snapshot(1, 10, [subject_doc("obama", "obama_1"), subject_doc("biden", "biden_1")])
        device.wait_version(10)
        assert ids(device.state_dir) == {"obama", "biden"}
        decider = Decider(Gallery(device.state_dir))
        assert decider.identify(encoding("obama_2")).payload.get("subject_id") == "obama"

        central.upsert(1, 11, subject_doc("kit", "kit_harington_1"))
        device.wait_version(11)
        assert decider.identify(encoding("kit_harington_2")).payload.get("subject_id") == "kit"

        central.revoke(1, 12, "obama")
        device.wait_version(12)
        d = decider.identify(encoding("obama_2"))  # same Decider: it notices the commit itself
        assert d.type == "biometric.unknown" and d.payload["gallery_version"] == 12
        assert decider.verify("obama", encoding("obama_2")).payload["reason"] == "not_enrolled"
        types = [t for t, _ in device.events]
        assert types.count("biometric.gallery_updated") == 3
        assert all("templates" not in json.dumps(p) for _, p in device.events)
        for t, p in device.events:
            conforms(t, p)
    finally:
        central.stop()


def test_forged_and_foreign_documents_are_rejected(device, mosquitto, central_key, tmp_path):
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        central.snapshot(1, 1, [subject_doc("obama", "obama_1")])
        device.wait_version(1)
        central.upsert(1, 2, subject_doc("intruder", "biden_1"), sign=False)  # unsigned
        other_key = signing.load_private_key(signing.generate_keypair(tmp_path / "k2", "evil")[0])
        forged = signing.sign({"site": SITE, "epoch": 1, "version": 2, "op": "revoke", "subject_id": "obama"},
                              other_key)
        central.client.publish(f"{PREFIX}/update", sealing.sealed_message(json.dumps(forged).encode(),
                               central.recipients), qos=1).wait_for_publish(10)
        tampered = signing.sign({"site": SITE, "epoch": 1, "version": 2, "op": "revoke", "subject_id": "x"},
                                central_key[0][0])
        tampered["subject_id"] = "obama"  # signature no longer covers the content
        central.client.publish(f"{PREFIX}/update", sealing.sealed_message(json.dumps(tampered).encode(),
                               central.recipients), qos=1).wait_for_publish(10)
        in_clear = signing.sign({"site": SITE, "epoch": 1, "version": 2, "op": "revoke", "subject_id": "obama"},
                                central_key[0][0])  # rightly signed, but templates must never cross in clear
        central.client.publish(f"{PREFIX}/update", json.dumps(in_clear).encode(), qos=1).wait_for_publish(10)
        device.wait_rejected(4)
        assert ids(device.state_dir) == {"obama"} and device.sync.state["version"] == 1
        rejected = [p for t, p in device.events if t == "biometric.gallery_rejected"]
        assert len(rejected) == 4 and "not signed" in rejected[0]["error"] and "not sealed" in rejected[3]["error"]
    finally:
        central.stop()


def test_catch_up_after_being_offline_while_updates_were_published(device, mosquitto, central_key, tmp_path):
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        central.snapshot(1, 1, [subject_doc("obama", "obama_1"), subject_doc("biden", "biden_1")])
        device.wait_version(1)
        device.stop()  # offline: the persistent session queues updates for it
        central.upsert(1, 2, subject_doc("rose", "rose_leslie_1"))
        central.revoke(1, 3, "biden")
        soon = datetime.now(UTC)
        central.upsert(1, 4, subject_doc("v-9", "alex_lacamoire_1", role="visitor",
                                         valid_from=soon - timedelta(hours=1), valid_until=soon + timedelta(hours=2)))
        device.start()
        device.wait_version(4)
        assert ids(device.state_dir) == {"obama", "rose", "v-9"}
        decider = Decider(Gallery(device.state_dir))
        assert decider.verify("v-9", encoding("alex_lacamoire_2")).type == "biometric.verified"
    finally:
        central.stop()


def test_a_gap_asks_for_a_snapshot_and_the_snapshot_closes_it(device, mosquitto, central_key, tmp_path):
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        central.snapshot(1, 1, [subject_doc("obama", "obama_1")])
        device.wait_version(1)
        central.upsert(1, 3, subject_doc("rose", "rose_leslie_1"))  # version 2 was lost
        wait_for(lambda: central.requests, 10, "a snapshot request")
        assert central.requests[0]["version"] == 1 and "gap" in central.requests[0]["reason"]
        assert device.sync.status()["held"] == 1 and ids(device.state_dir) == {"obama"}
        central.snapshot(1, 2, [subject_doc("obama", "obama_1"), subject_doc("biden", "biden_1")])
        device.wait_version(3)  # snapshot at 2, then the held update 3
        assert ids(device.state_dir) == {"obama", "biden", "rose"}
        central.upsert(1, 2, subject_doc("late", "kit_harington_1"))  # a replay of an old version
        central.snapshot(1, 1, [])  # and an old snapshot
        time.sleep(0.3)
        device.wait_version(3)
        assert ids(device.state_dir) == {"obama", "biden", "rose"} and device.sync.duplicates >= 2
    finally:
        central.stop()


def test_a_local_enrollment_is_reported_and_kept_only_while_central_vouches_for_it(device, mosquitto,
                                                                                       central_key, tmp_path):
    from drivers.camera.gallery import Subject

    g = Gallery(device.state_dir)
    digest = g.enroll_local(Subject("local-guard", "staff", [template("kit_harington_1")]), "j.smith",
                            "new starter, central down", approved_by="a.jones")
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        reported = wait_for(lambda: [p for t, p in device.events if t == "biometric.local_enrollment"], 10,
                            "the local enrollment reported")
        assert reported == [{"subject_id": "local-guard", "role": "staff", "operator": "j.smith",
                             "approved_by": "a.jones", "reason": "new starter, central down",
                             "template_sha256": digest,
                             "enrolled_at": reported[0]["enrolled_at"]}]
        vouch = [{"subject_id": "local-guard", "template_sha256": digest}]
        central.snapshot(1, 50, [subject_doc("obama", "obama_1")], vouched=vouch)
        device.wait_version(50)
        assert ids(device.state_dir) == {"obama", "local-guard"}  # confirmed: kept
        central.snapshot(2, 1, [subject_doc("biden", "biden_1")], vouched=vouch)  # a new epoch still vouches
        device.wait_version(1)
        assert ids(device.state_dir) == {"biden", "local-guard"}
        central.snapshot(2, 2, [subject_doc("biden", "biden_1")])  # central withdrew it
        device.wait_version(2)
        assert ids(device.state_dir) == {"biden"}
        settled = [p for t, p in device.events if t == "biometric.local_enrollment_settled"]
        assert [(p["outcome"], p["version"]) for p in settled] == [("confirmed", 50), ("removed", 2)]
        assert "never confirmed" in settled[-1]["reason"]
        for t, p in device.events:
            conforms(t, p)
    finally:
        central.stop()
        g.close()


def test_a_snapshot_that_does_not_vouch_for_a_local_enrollment_removes_it(device, mosquitto, central_key,
                                                                         tmp_path):
    from drivers.camera.gallery import Subject

    g = Gallery(device.state_dir)
    g.enroll_local(Subject("smuggled", "staff", [template("kit_harington_1")]), "root", "just because",
                   approved_by="nobody")
    central = Central(mosquitto, central_key[0], tmp_path)
    try:  # a vouch for other templates under the same name does not count
        central.snapshot(1, 5, [subject_doc("obama", "obama_1")],
                         vouched=[{"subject_id": "smuggled", "template_sha256": "0" * 64}])
        device.wait_version(5)
        assert ids(device.state_dir) == {"obama"}
        assert [p["outcome"] for t, p in device.events if t == "biometric.local_enrollment_settled"] == ["removed"]
    finally:
        central.stop()
        g.close()


def test_updates_wait_on_their_thread_never_on_the_network_thread(device):
    # The handler only queues: even a huge document returns at once.
    started = time.perf_counter()
    device.sync._on_message(f"{PREFIX}/update", b"{" * 1_000_000, None)
    assert time.perf_counter() - started < 0.05
    device.wait_rejected(1)
    assert threading.current_thread() is threading.main_thread()


def test_a_new_device_starts_from_the_retained_snapshot(make_device, mosquitto, central_key, tmp_path):
    central = Central(mosquitto, central_key[0], tmp_path)
    try:
        # Provisioning makes the device's seal key and registers its public half with central.
        sealing.device_key(tmp_path / "gate-new")
        central.snapshot(3, 40, [subject_doc("obama", "obama_1"), subject_doc("rose", "rose_leslie_1")])
        fresh = make_device("gate-new")  # no session, no gallery: only the retained snapshot
        fresh.wait_version(40)
        assert fresh.sync.state["epoch"] == 3 and ids(fresh.state_dir) == {"obama", "rose"}
        central.upsert(3, 41, subject_doc("biden", "biden_1"))
        fresh.wait_version(41)
    finally:
        central.stop()


def test_central_to_camera_to_central_through_the_daemon(edge_daemon, base_config, mosquitto, mqtt_collector,
                                                         central_key, tmp_path):
    """The daemon applies central's gallery and its camera decides with it; events reach central."""
    import shutil

    import cv2
    import numpy as np

    from tests._face_helpers import photo

    lane = tmp_path / "lane"
    lane.mkdir()
    shutil.copy(photo("obama_2"), lane / "0.jpg")
    for i in (1, 2):  # the person leaves: a new approach each time round the loop
        cv2.imwrite(str(lane / f"{i}.jpg"), np.zeros((480, 640, 3), np.uint8))
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/dev-1/events/biometric")
    central = Central(mosquitto, central_key[0], tmp_path)
    births = mqtt_collector(mosquitto, f"edge/v1/{SITE}/dev-1/state")
    try:
        base_config["mqtt"] = {"brokers": [mosquitto.uri]}
        base_config["trust"] = {"central_keys": [str(p) for p in central_key[1]]}
        base_config["drivers"] = [{"name": "cam", "kind": "camera.face", "source": str(lane), "loop": True,
                                   "liveness": "none", "max_fps": 4}]
        edge_daemon(base_config)
        birth = births.wait_for(lambda c: [m.json() for m in c.on_topic("state") if m.json().get("online")],
                                what="the daemon's birth message")[-1]
        central.extra_recipients["dev-1"] = base64.b64decode(birth["seal_key"])  # central's device registry
        central.snapshot(1, 1, [subject_doc("obama", "obama_1")])
        collector.wait_for(lambda c: any(e["type"] == "biometric.identified" for e in c.events()), 60,
                           "an identification published by the daemon")
        central.revoke(1, 2, "obama")
        collector.wait_for(lambda c: any(e["type"] == "biometric.unknown" and e["payload"]["gallery_version"] == 2
                                         for e in c.events()), 60, "decisions after the revoke")
        for e in collector.events("biometric."):
            conforms(e["type"], e["payload"])
        after = [e for e in collector.events("biometric.") if e["payload"].get("gallery_version") == 2]
        assert after and all(e["type"] == "biometric.unknown" for e in after)
    finally:
        central.stop()
