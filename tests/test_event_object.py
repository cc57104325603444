"""Event is a plain frozen object over the pydantic EventModel: it offers what the model
offered (dumps, copies, equality, repr, validation) with the same results, and only the
store gives it its seq."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import BaseModel, ValidationError

from edge import _event_bytes, events
from edge.errors import EventInvalid
from edge.events import Event, EventModel, canonical_json, make_event, set_seqs, wire

FIELDS = ("v", "id", "device", "site", "seq", "ts", "type", "source", "priority", "clock", "payload")


def _made(**kw) -> Event:
    return make_event(**{"device": "d-1", "site": "s-1", "type": "sim.x", "source": "drv",
                         "payload": {"n": 1, "s": "ü", "b": True, "z": None}, **kw})


def _model(event: Event) -> EventModel:
    """The event as the pydantic model validates it from its own dump."""
    return EventModel.model_validate(event.model_dump())


def test_an_event_is_frozen_and_only_the_store_gives_it_its_seq():
    event = _made()
    assert isinstance(event, Event) and not isinstance(event, BaseModel)
    for name in (*FIELDS, "family", "other", "_wire"):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(event, name, 5)
        with pytest.raises(ValidationError, match="frozen"):
            delattr(event, name)
    assert event.seq is None and event.payload == {"n": 1, "s": "ü", "b": True, "z": None}
    batch = [event, event]
    set_seqs(batch, 7)
    assert batch[0] is event and event.seq == 7 and batch[1] is not event and batch[1].seq == 8
    with pytest.raises(ValidationError):
        event.seq = 9
    assert event.seq == 7 and event.canonical_bytes() == canonical_json(
        {**_model(event).model_dump(mode="json"), "seq": 7})


@pytest.mark.parametrize("kw", [{}, {"ts": datetime(2030, 5, 6, 7, 8, 9, 10, tzinfo=UTC)},
                                {"payload": {"f": 1.5, "nested": [1, {"a": None}]}}, {"payload": None}])
def test_dumps_equality_and_repr_are_the_models(kw):
    event = _made(**kw)
    model = _model(event)
    assert event.model_dump() == model.model_dump() and event.model_dump(mode="json") == model.model_dump(mode="json")
    assert event.model_dump_json() == model.model_dump_json()
    assert repr(event) == repr(model).replace("EventModel(", "Event(", 1)
    assert event.ts == model.ts and event.ts.tzinfo is UTC and event.family == "sim"
    again = Event.model_validate(model.model_dump())
    assert again == event and again is not event and again != _made(**kw) and event != model
    assert Event.from_bytes(event.canonical_bytes()) == event == Event.model_validate_json(event.canonical_bytes())
    assert Event.model_validate(event) is event
    with pytest.raises(TypeError):
        hash(event)  # a dict payload: unhashable, as the frozen model was


def test_copies_and_pickles_keep_the_fields_and_the_bytes():
    event = _made()
    set_seqs([event], 3)
    for other in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event)),
                  event.model_copy(), event.model_copy(deep=True)):
        assert other == event and other is not event and other.canonical_bytes() == event.canonical_bytes()
        assert other.model_fields_set == event.model_fields_set
    assert copy.deepcopy(event).payload is not event.payload and event.model_copy().payload is event.payload
    alarm = event.model_copy(update={"priority": "alarm", "payload": {"k": [1]}})
    assert (alarm.priority, alarm.payload, event.priority, event.payload["n"]) == ("alarm", {"k": [1]}, "normal", 1)
    assert alarm.canonical_bytes() == canonical_json({**_model(alarm).model_dump(mode="json"), "seq": 3})
    assert wire(alarm)[2] == 0 and wire(event)[2] == 1
    with pytest.raises(ValueError, match="no field colour"):
        event.model_copy(update={"colour": "red"})


def test_the_constructor_and_validators_refuse_what_the_model_refuses():
    doc = _made().model_dump()
    assert Event(**doc) == Event.model_validate(doc)
    bad = [{**doc, "extra": 1}, {**doc, "seq": 0}, {**doc, "seq": 2**63}, {**doc, "type": "Bad"},
           {**doc, "ts": datetime(2026, 1, 1)}, {**doc, "priority": "urgent"}, {**doc, "payload": [1]}]
    for wrong in bad:
        with pytest.raises(ValidationError):
            Event(**wrong)
        with pytest.raises(ValidationError):
            Event.model_validate(wrong)
        with pytest.raises(ValidationError):
            EventModel.model_validate(wrong)
    raw = _made().canonical_bytes()
    with pytest.raises(ValidationError):
        Event.from_bytes(raw.replace(b'"v":1}', b'"v":1,"extra":2}'))
    assert Event.model_json_schema() == EventModel.model_json_schema()


def test_the_fields_set_are_the_models():
    given = {k: v for k, v in _made().model_dump().items() if k not in ("v", "seq", "clock")}
    event = Event.model_validate(given)
    assert event.model_fields_set == set(given) == _model(event).model_fields_set - {"v", "seq", "clock"}
    set_seqs([event], 4)
    assert event.model_fields_set == {*given, "seq"}
    made = _made()
    assert made.model_fields_set == set(FIELDS) - {"v", "seq"}


_SECOND = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize("ns", [
    _SECOND, _SECOND + 999, _SECOND + 1000, _SECOND + 999_999_999, _SECOND + 10**9, _SECOND + 123_456_789,
    _SECOND - 1, _SECOND - 86_400 * 10**9 + 5_000, 0, 253_402_300_799 * 10**9 + 999_999_000,
])
def test_the_time_made_from_nanoseconds_is_written_as_the_model_writes_it(monkeypatch, ns):
    """Every second's prefix, the microseconds (none when zero), the clock going back."""
    monkeypatch.setattr(events, "_time_ns", lambda: ns)
    for _ in range(2):  # formatting the second, then from the kept prefix
        event = _made()
        expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
        assert event.ts == expected and event.ts.tzinfo is UTC
        model = _model(event)
        assert wire(event)[3] == model.model_dump(mode="json")["ts"]
        assert event.canonical_bytes() == canonical_json(model.model_dump(mode="json"))


@pytest.mark.parametrize("payload", [
    {"n": 1, "s": "x"}, {}, {"f": 1e16}, {"big": 2**64}, {"nested": {"a": [1, 2.5]}}, {"k": "\ud800"},
    {1: "int key"}, {"t": (1, 2)}, {"nan": float("nan")}, {"k\ud800": 1}, {"z": 1, "a": "\u2028\"ü"},
])
def test_without_a_native_encoder_the_bytes_are_the_same(monkeypatch, payload):
    """A tablet has no orjson: the standard library's encoder writes the same bytes."""
    made = {}
    for name, encoder in (("native", events.native_bytes), ("standard", _event_bytes.standard_bytes)):
        monkeypatch.setattr(events, "native_bytes", encoder)
        try:
            event = make_event(device="d-1", site="s-1", type="sim.x", source="drv", payload=payload)
            made[name] = event.canonical_bytes().replace(event.id.encode(), b"ID").replace(
                wire(event)[3].encode(), b"TS")
        except (EventInvalid, ValueError) as exc:
            made[name] = type(exc)
    assert made["native"] == made["standard"]
