"""Numbers are finite and in range wherever a schema accepts them, so the published contract holds.

Pydantic accepts ``inf`` for a plain float field, and dumps it as ``null``: a
region of size Infinity was published as ``w: null``. Every inbound model now
refuses non-finite numbers, and the local API refuses them in a request body.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from drivers.xray.contract import EVENT_PAYLOADS as XRAY_PAYLOADS
from edge.localapi.client import call_json
from services.xray.totals import Origin
from tests.test_learning_api import _statement, tablet  # noqa: F401 - the fixture, reused


@pytest.mark.parametrize("raw", ["1e999", "-1e999", "NaN", "Infinity"])
def test_a_statement_score_that_is_not_finite_is_refused(tablet, raw):  # noqa: F811
    path, _, daemon, _, _ = tablet
    body = json.dumps(_statement(result={"score": {"raw": 12345.5}})).replace("12345.5", raw).encode()
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(b"POST /v1/learning/statements HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 400") and b"bad_json" in answer
    assert not [r for r in daemon.store.outbox_next(10) if r.type == "learning.statement"]
    status, _ = call_json(path, "POST", "/v1/learning/statements", _statement(result={"score": {"raw": 7.5}}))
    assert status == 201  # positive control: a finite score is taken


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_dose_totals_and_published_xray_payloads_refuse_non_finite_numbers(value):
    with pytest.raises(ValidationError):
        Origin(site="s", total_usv=value, as_of="2026-01-01T00:00:00Z")
    dose = {"scan_id": "s1", "scanner": "x", "subject": "A", "operator": "op", "time": "2026-01-01T00:00:00Z",
            "dose_usv": value, "total_before_usv": 0.0, "total_usv": 1.0, "warning_usv": 5.0, "limit_usv": 10.0,
            "window_months": 12, "detail": "d"}
    with pytest.raises(ValidationError):
        XRAY_PAYLOADS["xray.dose_warning"].model_validate(dose)
    assert XRAY_PAYLOADS["xray.dose_warning"].model_validate({**dose, "dose_usv": 1.0})
