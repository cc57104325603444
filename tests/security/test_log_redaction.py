"""Issue 17 acceptance, part 6: planted secrets of every kind, through every way a line is logged,
never reach the log output (JSON and console renderers, and a real tablet daemon's log)."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
import structlog

from edge import logs
from edge.localapi.client import call, call_json
from edge.logs import SECRET_WORDS
from edge.testing.wait import wait_for
from tests._messaging_helpers import DIRECTORY_TOPIC, RESIDENT, Central, topic
from tests.test_messaging_daemon import _start

TEMPLATE_B64 = base64.b64encode(os.urandom(512)).decode()  # a face template's wire form
SEALED = base64.b64encode(os.urandom(96)).decode()


def _plant(word: str, n: int) -> str:
    return f"plant{n}{word}val"  # no digits run, no base64 shape: only the key rules can catch it


def _planted_events() -> tuple[list[tuple[str, dict]], list[str]]:
    """(event name, fields) pairs that carry every secret word in every shape, and the planted values."""
    events, planted = [], [TEMPLATE_B64, SEALED]
    for n, word in enumerate(SECRET_WORDS):
        v = [_plant(word, n * 10 + i) for i in range(8)]
        planted += v
        events.append((f"planted_{word}", {
            word: v[0],                                             # the key itself
            f"user_{word}": v[1],                                   # as a word of a longer key
            "request": {"body": {"a": [{"b": {word: v[2]}}]}},      # at depth
            "raw": json.dumps({"doc": {word: v[3]}}),               # inside a JSON string
            "error": f"refused: {word}={v[4]} from client",         # in free text
            "detail": f'got {{"{word}": "{v[5]}", "ok": true}}',    # a JSON fragment in text
            f"{word.capitalize()}Value": v[6],                      # camelCase
            f"x-{word}": v[7],                                      # dashed (headers)
        }))
    events.append(("planted_blobs", {"payload": f"template {TEMPLATE_B64} end", "sealed_doc": {"box": SEALED}}))
    return events, planted


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_secret_kind_in_every_logging_shape_is_redacted(fmt):
    events, planted = _planted_events()
    buf = io.StringIO()
    logs.configure("debug", fmt, stream=buf)
    try:
        log = structlog.get_logger("edge.test")
        for name, fields in events:
            log.info(name, **fields)
            log.warning(name, **fields)
            try:
                raise ValueError(f"bad input {json.dumps(fields)}")
            except ValueError:
                log.exception(name + "_failed")  # the traceback carries the message
            log.error(name, error=str(fields))  # a dict's repr as text
    finally:
        structlog.reset_defaults()
    text = buf.getvalue()
    assert all(name in text for name, _ in events)  # positive control: every line was written
    leaked = [p for p in planted if p in text]
    assert leaked == [], f"{len(leaked)} planted secrets leaked, e.g. {leaked[:5]}"
    assert "ValueError" in text and "[redacted]" in text


def test_a_real_tablet_daemon_logs_none_of_the_planted_secrets(mosquitto, edge_daemon, tmp_path):
    from services.learning._link import StandaloneLink

    central = Central(tmp_path)
    publisher = StandaloneLink(mosquitto.uri, client_id="central").start()
    try:
        tablet = _start(edge_daemon, mosquitto, central, publisher)
        sock = tablet.sock
        pin, bearer, body, contact = "plantpinval", "plantbearerval", "plantbodyval", "plantcontactval"
        # Logging paths: a wrong PIN, an unknown bearer, a malformed body, a compose, central's refusals.
        assert call_json(sock, "POST", "/v1/session", {"pseudonym": RESIDENT, "pin": pin})[0] == 401
        assert call_json(sock, "GET", "/v1/messaging/messages",
                         headers={"Authorization": f"Bearer {bearer}"})[0] == 401
        assert call(sock, "POST", "/v1/session", f'{{"pin": "{pin}", '.encode())[0] == 400
        assert tablet.api("POST", "/v1/messaging/messages", {"contact": "c-mum", "body": body})[0] == 201
        forged = json.loads(central.contacts(version=9, seal=False))
        forged["residents"][0]["contacts"][0]["name"] = contact
        publisher.publish(topic("contacts"), central._sealed(json.dumps(forged).encode()))
        publisher.publish(DIRECTORY_TOPIC, json.dumps({"pin": pin, "token": bearer}).encode())
        wait_for(lambda: tablet.daemon.log_tail(10**7).count("document_refused") >= 1
                 and "residents_directory_refused" in tablet.daemon.log_tail(10**7), what="both refusals logged", timeout=45)
        assert tablet.daemon.stop() == 0
    finally:
        publisher.stop()
    text = tablet.daemon.log_path.read_text()
    assert "resident_login" in text and "message_out_queued" in text  # positive control
    for secret in (pin, bearer, body, contact, tablet.tokens[RESIDENT], *central.device_keys.values()):
        secret = secret if isinstance(secret, str) else base64.b64encode(secret).decode()
        assert secret not in text, f"{secret!r} is in the daemon's log"
