"""The redaction processor: secrets and biometric data never reach a rendered log line."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import structlog
from structlog.testing import capture_logs

from edge import logs
from edge.logs import REDACTED, redact

PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBf0Yl1kz7ZbLQnY8mC0aQ1s5fJ3N0r7sTtPqHn2YxQz\n"
       "-----END PRIVATE KEY-----\n")
PEM_BODY = "MC4CAQAwBQYDK2VwBCIEIBf0Yl1kz7ZbLQnY8mC0aQ1s5fJ3N0r7sTtPqHn2YxQz"
TEMPLATE = [0.0123456789 + i / 1000 for i in range(128)]  # a face_recognition encoding's shape
SECRETS = ["hunter2", "tok-abc-123", "sk_live_999", "shh-its-secret", PEM_BODY, "0.0123456789"]


def _rendered(fmt: str = "json", **event) -> str:
    """Configure edge's real logging onto a buffer, log one event, return what was written."""
    buf = io.StringIO()
    logs.configure("debug", fmt, stream=buf)
    try:
        structlog.get_logger("test").info("login_attempted", **event)
    finally:
        structlog.reset_defaults()
    return buf.getvalue()


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into: {text}"


NESTED = {
    "password": "hunter2",
    "mqtt": {"token": "tok-abc-123", "username": "gate-1", "api_key": "sk_live_999"},
    "clients": [{"client_secret": "shh-its-secret", "id": "c1"}],
    "pem_in_text": f"loaded key {PEM} from disk",
    "face": {"encoding_list": TEMPLATE},
    "matches": [{"person_id": "p1", "distance": 0.31, "vector": TEMPLATE}],
    "deep": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": "hunter2"}}}}}}}}}},
}


def test_processor_redacts_nested_secrets_in_the_event_dict():
    out = redact(None, "info", {"event": "x", **NESTED})
    assert out["password"] == REDACTED
    assert out["mqtt"] == {"token": REDACTED, "username": "gate-1", "api_key": REDACTED}
    assert out["clients"] == [{"client_secret": REDACTED, "id": "c1"}]
    assert PEM_BODY not in out["pem_in_text"] and out["pem_in_text"].startswith("loaded key [redacted]")
    assert out["face"]["encoding_list"] == REDACTED
    assert out["matches"][0] == {"person_id": "p1", "distance": 0.31, "vector": REDACTED}
    _assert_clean(json.dumps(out))


def test_capture_logs_through_the_redaction_processor():
    with capture_logs(processors=[redact]) as captured:
        structlog.get_logger("t").warning("mqtt_auth_failed", password="hunter2", broker="b:8883",
                                          session={"token": "tok-abc-123"})
    assert captured == [{"event": "mqtt_auth_failed", "log_level": "warning", "password": REDACTED,
                         "broker": "b:8883", "session": {"token": REDACTED}}]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_rendered_output_never_contains_secrets(fmt):
    text = _rendered(fmt, **NESTED)
    _assert_clean(text)
    assert "gate-1" in text and "p1" in text  # ordinary context survives
    if fmt == "json":
        doc = json.loads(text)
        assert doc["event"] == "login_attempted" and doc["level"] == "info"


def test_numpy_templates_are_redacted_in_rendered_json():
    enc64 = np.linspace(-0.2, 0.2, 128)  # float64, as face_recognition returns
    enc32 = enc64.astype(np.float32)
    text = _rendered(gallery=[{"person_id": "p7", "face": enc64}],
                     probe=enc32, as_list=[np.float32(0.0123456789)] * 128)
    doc = json.loads(text)
    assert doc["gallery"] == [{"person_id": "p7", "face": REDACTED}]
    assert doc["probe"] == REDACTED and doc["as_list"] == REDACTED
    assert "0.01234" not in text and "-0.2" not in text


def test_keys_that_only_name_a_file_or_count_stay_visible():
    out = redact(None, "info", {"key_file": "/etc/edge/device.key", "token_count": 3,
                                "passage": "lane1", "passages": 12, "keyboard_layout": "uk"})
    assert out["key_file"] == "/etc/edge/device.key"
    assert out["token_count"] == 3 and out["keyboard_layout"] == "uk"
    assert out["passage"] == "lane1" and out["passages"] == 12  # turnstile passages are not passwords


def test_short_float_lists_and_plain_values_are_untouched():
    event = {"event": "x", "bbox": [0.1, 0.2, 0.3, 0.4], "seqs": list(range(200)), "n": 5}
    assert redact(None, "info", dict(event)) == event


def test_raw_bytes_are_summarised_not_dumped():
    out = redact(None, "info", {"frame": b"\x00" * 4096})
    assert out["frame"] == "<4096 bytes>"


def test_pydantic_models_are_scrubbed_by_field_name():
    from pydantic import BaseModel

    class Login(BaseModel):
        user: str
        password: str

    out = redact(None, "info", {"login": Login(user="eng", password="hunter2")})
    assert out["login"] == {"user": "eng", "password": REDACTED}


def test_json_when_not_a_tty_in_a_real_process():
    """`auto` renders JSON lines when stdout is a pipe (journald)."""
    code = ("from edge import logs; import structlog; logs.configure('info', 'auto'); "
            "structlog.get_logger('t').info('started', secret='shh-its-secret', n=1)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    doc = json.loads(out)
    assert doc["event"] == "started" and doc["n"] == 1 and doc["secret"] == REDACTED


def test_level_filtering_and_set_level():
    buf = io.StringIO()
    logs.configure("warning", "json", stream=buf)
    try:
        log = structlog.get_logger("t")
        log.info("hidden")
        logs.set_level("info")
        log.info("shown")
    finally:
        structlog.reset_defaults()
    assert [json.loads(line)["event"] for line in buf.getvalue().splitlines()] == ["shown"]


def test_secrets_inside_free_text_and_urls_are_redacted():
    """Exception messages and URLs carry secrets too: driver_fault logs str(exc)."""
    out = redact(None, "error", {
        "event": "driver_fault",
        "error": "login refused: password=hunter2; user=eng",
        "detail": "bearer token: tok-abc-123 expired",
        "broker": "mqtts://gate-1:sk_live_999@broker-a:8883",
        "note": "passage granted at lane1 for token holder",
    })
    _assert_clean(json.dumps(out))
    assert out["error"] == "login refused: password=[redacted]; user=eng"
    assert out["broker"] == "mqtts://gate-1:[redacted]@broker-a:8883"
    assert out["note"] == "passage granted at lane1 for token holder"


def test_exception_tracebacks_are_redacted_in_rendered_output():
    buf = io.StringIO()
    logs.configure("info", "json", stream=buf)
    try:
        try:
            raise ConnectionError("broker said no to mqtts://gate-1:hunter2@b:8883")
        except ConnectionError:
            structlog.get_logger("t").exception("link_failed")
    finally:
        structlog.reset_defaults()
    text = buf.getvalue()
    assert "ConnectionError" in text
    _assert_clean(text)
