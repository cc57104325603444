"""The event envelope: validated on the way in, one canonical byte form everywhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from edge.errors import EventInvalid
from edge.events import MAX_SEQ, Event, canonical_json, make_event
from edge.store import Store


def mk(**kw):
    args = {"device": "gate-1", "site": "hmp-a", "type": "turnstile.passage", "source": "lane1",
            "payload": {"card": "c1"}}
    return make_event(**{**args, **kw})


def test_make_event_fills_the_envelope():
    e = mk()
    assert e.v == 1 and e.seq is None and e.priority == "normal" and e.clock == "synced"
    assert e.family == "turnstile"
    assert e.ts.tzinfo is not None and abs((datetime.now(UTC) - e.ts).total_seconds()) < 60
    assert len(e.id) == 36 and mk().id != e.id


@pytest.mark.parametrize("bad_type", ["passage", "Turnstile.passage", "turnstile.", ".x", "a b.c", "1x.y"])
def test_type_must_be_family_dot_name(bad_type):
    with pytest.raises(EventInvalid) as exc:
        mk(type=bad_type)
    msg = str(exc.value)
    assert f"invalid event {bad_type!r} from 'lane1'" in msg and "family.name" in msg


@pytest.mark.parametrize("field, value", [("priority", "urgent"), ("clock", "fine")])
def test_enums_are_checked(field, value):
    with pytest.raises(EventInvalid, match=field):
        mk(**{field: value})


def test_naive_timestamps_are_refused_and_others_become_utc():
    with pytest.raises(EventInvalid, match="timezone"):
        mk(ts=datetime(2026, 1, 1, 12, 0))
    e = mk(ts=datetime(2026, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))))
    assert e.ts == datetime(2026, 1, 1, 12, 0, tzinfo=UTC) and e.ts.utcoffset() == timedelta(0)


def test_unknown_envelope_fields_and_bad_seq_are_refused():
    doc = json.loads(mk().canonical_bytes())
    with pytest.raises(ValidationError):
        Event.model_validate({**doc, "extra": 1})
    for seq in (0, -1, MAX_SEQ + 1):
        with pytest.raises(ValidationError):
            Event.model_validate({**doc, "seq": seq})
    assert Event.model_validate({**doc, "seq": MAX_SEQ}).seq == 2**63 - 1


def test_events_are_immutable():
    e = mk()
    with pytest.raises(ValidationError):
        e.priority = "alarm"


def test_canonical_bytes_are_sorted_compact_utf8_and_round_trip():
    e = mk(payload={"zeta": 1, "alpha": "Zoë ✓", "nested": {"b": 2, "a": [1.5, None, True]}})
    raw = e.canonical_bytes()
    assert b" " not in raw.replace("Zoë ✓".encode(), b"")
    assert "Zoë ✓".encode() in raw  # UTF-8, not \\u escapes
    doc = json.loads(raw)
    assert list(doc) == sorted(doc) and list(doc["payload"]) == ["alpha", "nested", "zeta"]
    assert Event.from_bytes(raw) == e
    assert Event.from_bytes(raw).canonical_bytes() == raw
    assert raw.endswith(b"}") and raw.startswith(b'{"clock":"synced","device":"gate-1"')


def test_canonical_json_refuses_nan():
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_nan_in_a_payload_is_stored_as_null_never_as_invalid_json(tmp_path):
    store = Store(tmp_path / "state", device="gate-1", site="hmp-a")
    try:
        store.append(mk(payload={"x": float("nan"), "y": float("inf")}))
        body = store.tail(1)[0][1]
        assert json.loads(body)["payload"] == {"x": None, "y": None}
        assert b"NaN" not in body and b"Infinity" not in body
    finally:
        store.close()


@pytest.mark.parametrize("payload", [{"b": b"\xff\x00"}, {"o": object()}], ids=["bad_utf8", "object"])
def test_store_refuses_a_payload_that_is_not_json_with_a_clear_error(tmp_path, payload):
    store = Store(tmp_path / "state", device="gate-1", site="hmp-a")
    try:
        with pytest.raises(EventInvalid, match="'turnstile.passage' from 'lane1' cannot be stored: its payload is not JSON"):
            store.append(mk(payload=payload))
        assert store.append(mk()).seq == 1  # nothing half-written, the next append is fine
        assert store.verify().ok
    finally:
        store.close()
