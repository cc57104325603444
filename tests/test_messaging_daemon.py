"""Issue 9 acceptance: the tablet daemon's mailbox against a real broker."""

from __future__ import annotations

import base64
import json
import os

import pytest

from edge import sealing
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.localapi.client import ApiUnavailable, call, call_json
from edge.testing.wait import wait_for
from services.learning._link import StandaloneLink
from services.messaging.contract import CentralRefused, MessageOut, MessageRead, SealedContent
from tests._messaging_helpers import (
    DEVICE,
    DIRECTORY_TOPIC,
    OTHER,
    PINS,
    RESIDENT,
    SITE,
    Central,
    topic,
)
from tests.conftest import FACES

PHOTO = FACES / "alex_lacamoire_1.jpg"


def _config(mosquitto, central: Central) -> dict:
    return {"device_id": DEVICE, "site": SITE, "role": "tablet",
            "logging": {"level": "info", "format": "json"},
            "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
            "trust": {"central_keys": [str(central.pub), str(central.pub2)]},
            "messaging": {"central_seal_key": str(central.seal_pub)}, "drivers": []}


class Tablet:
    """The UI's view: the unix socket, one resident at a time."""

    def __init__(self, daemon):
        self.daemon, self.sock = daemon, daemon.state_dir / "api.sock"
        self.tokens: dict[str, str] = {}
        self.ready_as = RESIDENT

    def headers(self, resident=RESIDENT) -> dict:
        if resident not in self.tokens:
            code, body = call_json(self.sock, "POST", "/v1/session", {"pseudonym": resident, "pin": PINS[resident]})
            assert code == 201, body
            self.tokens[resident] = body["token"]
        return {"Authorization": f"Bearer {self.tokens[resident]}"}

    def api(self, method, url, body=None, resident=RESIDENT):
        return call_json(self.sock, method, url, body, headers=self.headers(resident))

    def message(self, msg_id, resident=RESIDENT):
        return self.api("GET", f"/v1/messaging/messages/{msg_id}", resident=resident)[1]

    def ready(self) -> bool:
        # The directory is applied once per start (from disk, or the retained one on first start);
        # logging in before then would count as a wrong PIN.
        if self.daemon.log_tail(10**7).count("residents_directory_applied") < self.daemon.starts:
            return False
        try:
            self.tokens.clear()  # a restarted daemon has forgotten every session
            return self.api("GET", "/v1/messaging/contacts", resident=self.ready_as)[1]["contacts"] != []
        except ApiUnavailable:
            return False


@pytest.fixture
def central(tmp_path):
    return Central(tmp_path)


@pytest.fixture
def publisher(mosquitto):
    link = StandaloneLink(mosquitto.uri, client_id="central").start()
    yield link
    link.stop()


def _start(edge_daemon, mosquitto, central, publisher) -> Tablet:
    daemon = edge_daemon(_config(mosquitto, central), start=False)
    central.provision(daemon)
    publisher.publish(topic("contacts"), central.contacts(), retain=True)
    publisher.publish(DIRECTORY_TOPIC, central.directory(), retain=True)
    tablet = Tablet(daemon.start())
    wait_for(tablet.ready, what="contacts allowlist applied", timeout=45)
    central.learn_device_key(mosquitto)
    return tablet


def test_offline_compose_then_moderation_states_and_read_receipts(
        mosquitto, edge_daemon, mqtt_collector, central, publisher):
    tablet = _start(edge_daemon, mosquitto, central, publisher)
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    mosquitto.stop()
    code, a = tablet.api("POST", "/v1/messaging/messages", {"contact": "c-mum", "body": "See you Sunday"})
    assert code == 201 and a["state"] == "queued"
    code, b = tablet.api("POST", "/v1/messaging/messages", {"contact": "c-lawyer", "body": "About my appeal"})
    assert code == 201 and tablet.message(b["id"])["state"] == "queued"
    mosquitto.start()
    outs = collector.wait_for(lambda c: len(c.events("message.out")) >= 2 and c.events("message.out"),
                              what="both message.out events", timeout=45)
    for e in outs:
        MessageOut.model_validate(e["payload"])
        SealedContent.model_validate(central.open(e))
    opened = {central.open(e)["body"]: e for e in outs}
    assert set(opened) == {"See you Sunday", "About my appeal"}
    assert opened["About my appeal"]["payload"]["privileged"] is True
    assert central.open(opened["See you Sunday"])["resident"] == RESIDENT
    wait_for(lambda: tablet.message(a["id"])["state"] == "sent", what="sent after PUBACK", timeout=45)

    publisher.publish(topic("status"), central.status(a["id"], "received"))
    publisher.publish(topic("status"), central.status(a["id"], "approved"))
    publisher.publish(topic("status"), central.status(b["id"], "held"))
    publisher.publish(topic("status"), central.status(b["id"], "rejected", "content_policy"))
    wait_for(lambda: tablet.message(a["id"])["state"] == "approved", what="approved", timeout=45)
    rejected = wait_for(lambda: (m := tablet.message(b["id"]))["state"] == "rejected" and m, what="rejected", timeout=45)
    assert rejected["reason"] == "content_policy" and "held" in [h["state"] for h in rejected["history"]]
    assert [h["state"] for h in tablet.message(a["id"])["history"]] == ["queued", "sent", "received", "approved"]
    publisher.publish(topic("status"), central.status(a["id"], "received"))  # late duplicate: no step back
    publisher.publish(topic("status"), central.status(a["id"], "delivered"))
    wait_for(lambda: tablet.message(a["id"])["state"] == "delivered", what="delivered", timeout=45)

    msg_id, doc = central.inbound("Love you, see you soon")
    publisher.publish(topic("in"), doc)
    publisher.publish(topic("in"), doc)  # delivered twice
    wait_for(lambda: tablet.api("GET", f"/v1/messaging/messages/{msg_id}")[0] == 200, what="inbound stored", timeout=45)
    code, listing = tablet.api("GET", "/v1/messaging/messages")
    assert [m["id"] for m in listing["messages"] if m["direction"] == "in"] == [msg_id]
    assert tablet.message(msg_id)["body"] == "Love you, see you soon"
    assert tablet.api("GET", f"/v1/messaging/messages/{msg_id}", resident=OTHER)[0] == 404  # not their mailbox
    assert tablet.api("POST", f"/v1/messaging/messages/{msg_id}/read")[1]["receipt_sent"] is True
    assert tablet.api("POST", f"/v1/messaging/messages/{msg_id}/read")[1]["receipt_sent"] is False
    receipts = collector.wait_for(lambda c: c.events("message.read"), what="read receipt", timeout=45)
    unique = {r["id"]: r for r in receipts}.values()  # at-least-once: dedupe by event id, as central does
    assert [MessageRead.model_validate(r["payload"]).message_id for r in unique] == [msg_id]
    stats = tablet.daemon.cli("messages", "stats")
    assert stats.returncode == 0 and "See you" not in stats.stdout and RESIDENT not in stats.stdout


def test_messages_sent_while_the_tablet_was_down_arrive_on_return(
        mosquitto, edge_daemon, central, publisher):
    tablet = _start(edge_daemon, mosquitto, central, publisher)
    assert tablet.daemon.stop() == 0, tablet.daemon.log_tail()
    ids = []
    for text in ("first while away", "second while away"):
        msg_id, doc = central.inbound(text)
        publisher.publish(topic("in"), doc)
        ids.append(msg_id)
    tablet.daemon.start()
    wait_for(lambda: tablet.ready() and
             {m["id"] for m in tablet.api("GET", "/v1/messaging/messages")[1]["messages"]} == set(ids),
             what="queued inbound messages delivered on return", timeout=45)


def test_bad_input_is_refused_and_nothing_is_stored(mosquitto, edge_daemon, mqtt_collector, central, publisher):
    tablet = _start(edge_daemon, mosquitto, central, publisher)
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/events/#")
    photo = base64.b64encode(PHOTO.read_bytes()).decode()
    cases = [
        ({"contact": "c-stranger", "body": "hi"}, 403, "unknown_contact"),
        ({"contact": "c-bro", "body": "hi"}, 403, "unknown_contact"),  # another resident's contact
        ({"contact": "c-mum", "body": "x", "attachments": [{"media_type": "image/png", "data": photo}]},
         400, "bad_attachment"),  # a JPEG declared as PNG
        ({"contact": "c-mum", "body": "x", "attachments": [{"media_type": "image/jpeg",
                                                          "data": base64.b64encode(b"MZ\x90\x00" * 100).decode()}]},
         400, "bad_attachment"),
        ({"contact": "c-mum", "body": "x", "attachments": [{"media_type": "image/jpeg", "data": base64.b64encode(
            b"\xff\xd8\xff" + os.urandom(600 * 1024)).decode()}]}, 400, "bad_attachment"),  # oversized
        ({"contact": "c-mum", "body": ""}, 400, "bad_body"),
    ]
    for body, status, code in cases:
        got = tablet.api("POST", "/v1/messaging/messages", body)
        assert got[0] == status and got[1]["error"]["code"] == code, (body.get("contact"), got)
    assert tablet.api("GET", "/v1/messaging/messages")[1]["messages"] == []
    assert call_json(tablet.sock, "GET", "/v1/messaging/messages")[0] == 401  # nobody logged in

    publisher.publish(topic("status"), central.status("0d1e2f", "approved", sign=False))
    to_tablet = {DEVICE: central.device_keys[DEVICE]}
    publisher.publish(topic("in"), sealing.sealed_message(b"{not json", to_tablet))
    msg_id, doc = central.inbound("forged", seal=False)
    forged = json.loads(doc)
    forged["body"] = "changed in transit"
    publisher.publish(topic("in"), sealing.sealed_message(json.dumps(forged).encode(), to_tablet))
    _, wrong_type = central.inbound("pic", attachments=[("image/png", PHOTO.read_bytes())])
    publisher.publish(topic("in"), wrong_type)
    _, in_clear = central.inbound("signed but not sealed", seal=False)
    publisher.publish(topic("in"), in_clear)
    _, other_tablet = central.inbound("for another tablet")
    publisher.publish(topic("in"), sealing.sealed_message(json.loads(other_tablet)["sealed"]["box"].encode(),
                                                          {"tab-9": central.device_keys[DEVICE]}))
    refused = collector.wait_for(lambda c: len(c.events("message.central_refused")) >= 6
                                 and c.events("message.central_refused"), what="six refusals", timeout=45)
    reasons = " | ".join(CentralRefused.model_validate(e["payload"]).reason for e in refused)
    assert "not signed" in reasons and "not JSON" in reasons and "bad signature" in reasons
    assert "messaging.in: not sealed" in reasons and "not sealed to this device" in reasons
    assert "declared image/png but the content is image/jpeg" in reasons
    assert tablet.api("GET", "/v1/messaging/messages")[1]["messages"] == []


def _files_containing(root, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            hits += [f"{path.name}: {n[:20]!r}" for n in needles if n in data]
    return hits


def test_privacy_nothing_in_plain_on_disk_and_purge_resident_leaves_nothing(
        mosquitto, edge_daemon, mqtt_collector, central, publisher):
    tablet = _start(edge_daemon, mosquitto, central, publisher)
    collector = mqtt_collector(mosquitto, f"edge/v1/{SITE}/{DEVICE}/{'cmd/result'}")
    secret = "The parcel is under the third floorboard"
    photo = PHOTO.read_bytes()
    code, sent = tablet.api("POST", "/v1/messaging/messages", {
        "contact": "c-mum", "body": secret,
        "attachments": [{"media_type": "image/jpeg", "data": base64.b64encode(photo).decode()}]})
    assert code == 201
    att = tablet.message(sent["id"])["attachments"][0]
    status, _, got = call(tablet.sock, "GET", f"/v1/messaging/attachments/{att['id']}",
                          headers=tablet.headers())
    assert status == 200 and got == photo
    in_id, doc = central.inbound("Inbound secret: grandma's recipe", attachments=[("image/jpeg", photo)])
    publisher.publish(topic("in"), doc)
    wait_for(lambda: tablet.api("GET", f"/v1/messaging/messages/{in_id}")[0] == 200, what="inbound stored", timeout=45)
    wait_for(lambda: tablet.message(sent["id"])["state"] == "sent", what="sent", timeout=45)

    needles = [secret.encode(), b"grandma's recipe", photo[5000:5064], photo[-64:],
               base64.b64encode(photo[6000:6048])]
    state = tablet.daemon.state_dir
    assert _files_containing(state, needles) == []  # running: db, WAL, shm, event store
    assert tablet.daemon.stop() == 0, tablet.daemon.log_tail()
    assert _files_containing(state, needles) == []  # and after the WAL is checkpointed
    assert (state / "secrets" / "mailbox.key").stat().st_mode & 0o777 == 0o600
    logged = tablet.daemon.log_path.read_text()
    assert secret not in logged and "grandma" not in logged and RESIDENT not in logged  # nothing of it in logs
    tablet.daemon.start()
    wait_for(tablet.ready, what="daemon back", timeout=45)

    assert _files_containing(state, [RESIDENT.encode()])  # the search does find what is there
    cmd = build_command(target="edge", name="purge_resident", args={"resident": RESIDENT},
                        device=DEVICE, site=SITE, keys=[central.key, central.key2], reason="released")
    publish_command(mosquitto.uri, SITE, DEVICE, cmd)
    def results(c):
        docs = [m.json() for m in c.on_topic("cmd/result")]
        events = [e for d in docs for e in (d.get("events") or [d])]
        return [e.get("payload", e) for e in events if e.get("payload", e).get("id") == cmd["id"]]
    result = collector.wait_for(results, what="purge result", timeout=45)[0]
    assert result["status"] == "ok" and result["result"]["purged"]["messages"] == 2
    assert tablet.api("GET", "/v1/messaging/messages")[0] == 401  # the purge ended their session
    assert tablet.api("GET", "/v1/messaging/contacts", resident=OTHER)[0] == 200  # others untouched
    # Central's directory drops a released resident: then nothing on the tablet names them.
    publisher.publish(DIRECTORY_TOPIC, central.directory(2, {OTHER: (PINS[OTHER], "active")}), retain=True)
    wait_for(lambda: tablet.daemon.log_tail(10**7).count("residents_directory_applied") >= 3,
             what="directory without the released resident", timeout=45)
    assert _files_containing(state, [RESIDENT.encode()]) == []
