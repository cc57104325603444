"""Fuzz harness, part 2: the real daemon and a real broker, every topic it receives and every local API route.

For each ``receive`` channel of docs/asyncapi.json, hostile payloads derived
from a valid document are published; after every case the daemon is running,
no component is down, and a valid message of the same kind is processed. The
gallery topics need the face models and are fuzzed in process by
``test_fuzz_inputs.py``'s signed-document case (they go through ``open_signed``).
"""

from __future__ import annotations

import itertools
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import signing
from edge.commands.build import build_command
from edge.localapi.client import ApiUnavailable
from edge.testing.hostile import RAW_VALUES, example_count, hostile_json
from edge.testing.wait import wait_for
from services.learning._link import StandaloneLink
from tests._messaging_helpers import Central
from tests._messaging_helpers import topic as msg_topic

SITE = "site-1"
REPO = Path(__file__).resolve().parents[2]
RECEIVED = {op["channel"]["$ref"].rsplit("/", 1)[-1]
            for op in json.loads((REPO / "docs" / "asyncapi.json").read_text())["operations"].values()
            if op["action"] == "receive"}
FUZZED_HERE = {"deviceCommands", "siteCommands", "siteXrayDose", "siteRevocations", "deviceConfig", "siteConfig",
               "tabletResidentDirectory", "siteLearningCatalog", "tabletChunkResponse",
               "tabletContacts", "tabletMessageIn", "tabletMessageStatus"}
IN_PROCESS = {"siteGallerySnapshot", "siteGalleryUpdate"}


def _settings(n: int):
    return settings(max_examples=example_count(n), deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def test_every_received_topic_is_fuzzed():
    assert RECEIVED == FUZZED_HERE | IN_PROCESS, "a new inbound topic needs a fuzz case"


def _healthy(daemon) -> None:
    assert daemon.running, daemon.log_tail()
    status = json.loads((daemon.state_dir / "status.json").read_text())
    down = {n: c for n, c in status["components"].items() if c.get("status") == "down"}
    assert not down, f"components down: {down}"


@pytest.fixture
def publisher(mosquitto):
    link = StandaloneLink(mosquitto.uri, client_id="central-fuzz").start()
    yield link
    link.stop()


def test_fuzz_gate_topics(tmp_path, mosquitto, mqtt_collector, edge_daemon, base_config, publisher):
    key_path, pub, _ = signing.generate_keypair(tmp_path / "keys", "central")
    key = signing.load_private_key(key_path)
    trustee_path, trustee_pub, _ = signing.generate_keypair(tmp_path / "keys", "trustee", ["config"])
    trustee = signing.load_private_key(trustee_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    base_config.update(
        mqtt={"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(pub), str(trustee_pub)], "clock_skew_s": 60},
        commands={"rejections_per_minute": 100_000}, remote_config={"enabled": True},
        drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 1.0},
                 {"name": "xr", "kind": "xray.folder", "path": str(inbox)}])
    collector = mqtt_collector(mosquitto, [f"edge/v1/{SITE}/dev-1/cmd/result", f"edge/v1/{SITE}/dev-1/events/xray",
                                           f"edge/v1/{SITE}/dev-1/events/trust"])
    daemon = edge_daemon(base_config)

    def command() -> dict:
        return build_command(keys=[key], target="hb", name="ping", device="dev-1", site=SITE)

    def result_of(doc):
        return lambda c: [e for msg in c.on_topic("/cmd/result") for e in msg.json()["events"]
                          if e["payload"]["id"] == doc["id"] and e["payload"]["status"] == "ok"]

    def fuzz_commands(topic: str):
        @_settings(15)
        @given(hostile_json(command()))
        def case(raw: bytes):
            publisher.publish(topic, raw)
            valid = command()
            publisher.publish(topic, json.dumps(valid).encode())
            collector.wait_for(result_of(valid), 20, "the valid command after a hostile one")
            _healthy(daemon)
        case()

    for topic in (f"edge/v1/{SITE}/dev-1/cmd", f"edge/v1/{SITE}/cmd"):
        fuzz_commands(topic)

    config = signing.sign({"type": "edge.config", "site": SITE, "device": "dev-1", "version": 1,
                           "issued_at": datetime.now(UTC).isoformat(), "settings": {"logging.level": "info"}}, trustee)

    def fuzz_config(topic: str):  # refused with a reason; the daemon still runs commands
        @_settings(15)
        @given(hostile_json(config))
        def case(raw: bytes):
            publisher.publish(topic, raw)
            valid = command()
            publisher.publish(f"edge/v1/{SITE}/dev-1/cmd", json.dumps(valid).encode())
            collector.wait_for(result_of(valid), 20, "a valid command after a hostile config")
            _healthy(daemon)
        case()

    for topic in (f"edge/v1/{SITE}/dev-1/config", f"edge/v1/{SITE}/config"):
        fuzz_config(topic)

    def dose() -> dict:
        now = datetime.now(UTC).isoformat()
        return signing.sign({"type": "xray.dose_records", "site": SITE, "issued_at": now, "subjects": [
            {"subject": "A1234BC", "origins": [{"site": "site-2", "total_usv": 1.5, "as_of": now}]}]}, key)
    applied = itertools.count(1)

    @_settings(15)
    @given(hostile_json(dose()))
    def dose_case(raw: bytes):
        publisher.publish(f"edge/v1/{SITE}/xray/dose", raw)
        publisher.publish(f"edge/v1/{SITE}/xray/dose", json.dumps(dose()).encode())
        n = next(applied)
        collector.wait_for(lambda c: len(c.events("xray.dose_records_applied")) >= n, 20, "valid dose records")
        _healthy(daemon)
    dose_case()

    serials = itertools.count(1)

    def revocations(serial: int) -> dict:
        return signing.sign({"type": "trust.revocations", "site": SITE, "serial": serial,
                             "issued_at": datetime.now(UTC).isoformat(), "revoked": []}, trustee)

    @_settings(15)
    @given(hostile_json(revocations(0)))  # serial 0: a damage that leaves it valid changes nothing
    def revocation_case(raw: bytes):
        publisher.publish(f"edge/v1/{SITE}/trust/revocations", raw)
        n = next(serials)
        publisher.publish(f"edge/v1/{SITE}/trust/revocations", json.dumps(revocations(n)).encode())
        collector.wait_for(lambda c: len(c.events("trust.revocations_applied")) >= n, 20, "valid revocation list")
        _healthy(daemon)
    revocation_case()


def _catalog(central: Central, version: int) -> bytes:
    now = datetime.now(UTC)
    doc = {"type": "learning.catalog", "site": SITE, "version": version, "issued_at": now.isoformat(),
           "expires_at": (now + timedelta(days=7)).isoformat(), "chunk_size": 65536, "courses": [],
           "assignments": []}
    return json.dumps(signing.sign(doc, central.key)).encode()


@pytest.fixture
def tablet(mosquitto, edge_daemon, publisher, tmp_path):
    from tests.test_messaging_daemon import _start

    central = Central(tmp_path)
    ui = _start(edge_daemon, mosquitto, central, publisher)

    def api(method, url, body=None):
        try:
            return ui.api(method, url, body)
        except ApiUnavailable:
            return 0, None
    return ui.daemon, central, api, ui


def test_fuzz_tablet_topics(tablet, publisher):
    daemon, central, api, _ = tablet
    versions = itertools.count(2)

    def catalog_ok(raw: bytes, topic: str) -> None:
        publisher.publish(topic, raw)
        version = next(versions)
        publisher.publish(f"edge/v1/{SITE}/learning/catalog", _catalog(central, version))
        wait_for(lambda: api("GET", "/v1/learning/status")[1]["catalog_version"] == version, 20, "catalog")
        _healthy(daemon)

    def inbound_ok(raw: bytes, topic: str) -> None:
        publisher.publish(topic, raw)
        publisher.publish(topic, central._sealed(raw))  # and sealed to the tablet: past the envelope
        msg_id, doc = central.inbound("hello")
        publisher.publish(msg_topic("in"), doc)
        wait_for(lambda: api("GET", f"/v1/messaging/messages/{msg_id}")[0] == 200, 20, "inbound message")
        _healthy(daemon)

    cases = [
        (f"edge/v1/{SITE}/learning/catalog", json.loads(_catalog(central, 1)), catalog_ok),
        (f"edge/v1/{SITE}/tab-1/learning/res", {"status": "ok"}, catalog_ok),
        (msg_topic("contacts"), json.loads(central.contacts(version=1, seal=False)), inbound_ok),
        (msg_topic("status"), json.loads(central.status(str(uuid.uuid4()), "approved")), inbound_ok),
        (msg_topic("in"), json.loads(central.inbound("hi", seal=False)[1]), inbound_ok),
        (f"edge/v1/{SITE}/tab-1/residents/directory", json.loads(central.directory(version=1, seal=False)),
         inbound_ok),
    ]

    def fuzz(topic, valid, check):
        @_settings(12)
        @given(hostile_json(valid))
        def case(raw: bytes):
            check(raw, topic)
        case()

    for topic, valid, check in cases:
        fuzz(topic, valid, check)


def _raw_http(sock_path: Path, request: bytes) -> int:
    """Send raw bytes; the status code of the answer (0: the connection closed without one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(sock_path))
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered (413, 400) and hung up before reading all of it: read the answer
        head = b""
        while b"\r\n" not in head:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            head += chunk
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


_SEGMENT = st.one_of(st.sampled_from(["..", "%00", "%ff%fe", "%2e%2e%2f", "a" * 5000, "0" * 64, "%ud800", ""]),
                     st.text(st.characters(codec="ascii", exclude_characters="/?# \r\n"), max_size=20))


def test_fuzz_local_api_routes(tablet):
    daemon, central, api, ui = tablet
    auth = ui.headers()["Authorization"]  # a logged-in resident: the handlers behind the login are reached
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops
              if method in ("get", "post", "put", "delete")]
    body = {"contact": "c-mum", "body": "hi", "verb": "completed", "sha256": "0" * 64, "course": "c1"}

    @_settings(60)
    @given(st.sampled_from(routes), _SEGMENT, st.sampled_from(["", "?limit=NaN", "?before=1e999", "?x=%ff"]),
           hostile_json(body), st.sampled_from([auth, auth, "Bearer \\ud800", "Bearer " + "x" * 300, "Basic ..", ""]))
    def case(route, segment, query, raw_body, authorization):
        method, pattern = route
        import re
        path = re.sub(r"\{\w+\}", lambda _m: segment, pattern)
        request = (f"{method} {path}{query} HTTP/1.1\r\nHost: edge\r\nAuthorization: {authorization}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(raw_body)}\r\n"
                   f"Connection: close\r\n\r\n").encode() + raw_body
        status = _raw_http(daemon.state_dir / "api.sock", request)
        # Any deliberate answer (2xx, 4xx, 503 "no catalog yet"); never none, never an internal error.
        assert 200 <= status < 600 and status != 500, f"{method} {path}{query}: answered {status or 'nothing'}"
        assert api("GET", "/v1/learning/status")[0] == 200  # positive control
        _healthy(daemon)
    case()
    assert RAW_VALUES  # the strategies are the shared ones
