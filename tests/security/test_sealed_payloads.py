"""Issue 17 acceptance, part 3: whoever can subscribe on the broker reads no mail and no face template.

The attacker subscribes to ``#`` on the broker while central sends a resident's
mail (with a photo) to a real tablet daemon, the resident answers, and central
sends gallery templates to a gate's gallery sync. Positive controls: the mail
and the templates do arrive and are used.
"""

from __future__ import annotations

import base64
import json

from drivers.camera.gallery import Gallery
from drivers.camera.sync import GallerySync
from edge import sealing, signing
from edge.config import Settings
from edge.mqtt import MqttLink
from edge.testing.collector import Received
from edge.testing.wait import wait_for
from services.learning._link import StandaloneLink
from tests._face_helpers import template
from tests._messaging_helpers import RESIDENT, SITE, Central, topic
from tests.conftest import FACES
from tests.test_messaging_daemon import _start

PHOTO = (FACES / "alex_lacamoire_1.jpg").read_bytes()


def _needles(text: str, blob: bytes) -> list[bytes]:
    """Plain forms an eavesdropper could search for: the text, raw slices, base64 slices."""
    third = len(blob) // 9 * 3  # a multiple of 3: its base64 is a substring of the whole base64
    needles = [text.encode(), json.dumps(text).encode()[1:-1], blob[third:third + 32], blob[-32:],
               base64.b64encode(blob[third:third + 30]), base64.b64encode(blob)[2 * third:2 * third + 40]]
    assert all(len(n) >= 8 for n in needles)
    return needles


def _leaks(messages, needles: list[bytes]) -> list[str]:
    return [f"{m.topic}: {n[:16]!r}" for m in messages for n in needles if n in m.payload]


def test_a_broker_wide_subscriber_sees_no_plaintext_message(mosquitto, edge_daemon, mqtt_collector, tmp_path):
    spy = mqtt_collector(mosquitto, "#")
    central = Central(tmp_path)
    publisher = StandaloneLink(mosquitto.uri, client_id="central").start()
    try:
        tablet = _start(edge_daemon, mosquitto, central, publisher)
        body = "Your hearing moved to the 14th, bring the letter"
        msg_id, doc = central.inbound(body, contact="c-mum", attachments=[("image/jpeg", PHOTO)])
        publisher.publish(topic("in"), doc)
        wait_for(lambda: tablet.api("GET", f"/v1/messaging/messages/{msg_id}")[0] == 200, what="mail stored", timeout=45)
        got = tablet.message(msg_id)
        assert got["body"] == body  # positive control: the resident reads it
        reply = "Thanks, I will bring it on the 14th"
        assert tablet.api("POST", "/v1/messaging/messages", {"contact": "c-mum", "body": reply})[0] == 201
        spy.wait_for(lambda c: c.events("message.out"), what="the reply on the broker", timeout=45)
        spy.wait_for(lambda c: c.on_topic("msg/in"), what="the inbound message seen by the spy")
    finally:
        publisher.stop()
    seen = list(spy.messages)
    needles = _needles(body, PHOTO) + [reply.encode(), RESIDENT.encode()]
    _, in_clear = central.inbound(body, attachments=[("image/jpeg", PHOTO)], seal=False)
    assert len(_leaks([Received("control", in_clear, False)], needles)) >= 5  # the scan finds what is there
    assert _leaks(seen, needles) == []
    sealed = [m for m in seen if m.topic.endswith("/msg/in")]
    assert sealed and all(set(m.json()) == {"sealed"} for m in sealed)


def test_a_broker_wide_subscriber_sees_no_face_template(mosquitto, mqtt_collector, tmp_path):
    spy = mqtt_collector(mosquitto, "#")
    key_path, pub_path, _ = signing.generate_keypair(tmp_path / "keys", "central")
    central_key = signing.load_private_key(key_path)
    settings = Settings(device_id="gate-1", site=SITE, role="gate", state_dir=tmp_path / "gate-1",
                        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.05, "backoff_max_s": 0.5},
                        trust={"central_keys": [pub_path]})
    link = MqttLink(settings, device_state=False)
    sync = GallerySync(settings.state_dir, SITE, "gate-1", link, signing.load_public_keys([pub_path]))
    sync.start()
    link.start()
    try:
        assert link.wait_connected(10)
        face = template("obama_1")
        doc = signing.sign({"site": SITE, "epoch": 1, "version": 1, "issued_at": "2026-01-01T00:00:00+00:00",
                            "subjects": [{"subject_id": "visitor-88", "role": "visitor",
                                          "valid_until": "2099-01-01T00:00:00+00:00",
                                          "templates": [base64.b64encode(face).decode()]}]}, central_key)
        recipients = {"gate-1": sealing.device_key(settings.state_dir).public_raw}
        central = StandaloneLink(mosquitto.uri, client_id="central").start()
        central.publish(f"edge/v1/{SITE}/gallery/snapshot", sealing.sealed_message(
            json.dumps(doc).encode(), recipients), retain=True)
        central.stop()
        wait_for(lambda: sync.state.get("version") == 1, what="snapshot applied", timeout=45)
        gallery = Gallery(settings.state_dir)
        try:  # positive control: the gate holds the template
            assert [s.templates for s in gallery.subjects() if s.subject_id == "visitor-88"] == [[face]]
        finally:
            gallery.close()
        spy.wait_for(lambda c: c.on_topic("gallery/snapshot"), what="the snapshot seen by the spy")
    finally:
        link.stop()
        sync.stop()
    assert _leaks(spy.messages, _needles("visitor-88", face)) == []
