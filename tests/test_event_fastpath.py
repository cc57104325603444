"""make_event's fast path and wire() give byte for byte what pydantic and
canonical_json gave before, for every valid event, and refuse what they refused."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge import _event_bytes, events
from edge.errors import EventInvalid
from edge.events import Event, _make_checked, canonical_json, make_event, set_seqs, wire, with_seq

_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12)
            | st.floats(allow_nan=False, allow_infinity=False))
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
_names = st.text(min_size=1, max_size=12)
_types = st.from_regex(r"\A[a-z][a-z0-9_]{0,6}\.[a-z][a-z0-9_.]{0,8}\Z")
_zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-9, minutes=-30))])
_ts = st.none() | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                               timezones=_zones)


class _Lane(enum.Enum):
    IN = "in"


def _old_bytes(event: Event, seq: int | None) -> bytes:
    """What the store wrote before the fast path: pydantic's JSON mode, then canonical_json."""
    return canonical_json({**event.model_dump(mode="json"), "seq": seq})


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(st.text(max_size=8), _json, max_size=6), device=_names, site=_names,
       source=_names, type=_types, ts=_ts, seq=st.integers(1, 2**63 - 1),
       priority=st.sampled_from(["alarm", "normal", "telemetry"]),
       clock=st.sampled_from(["synced", "unsynced", "stepped_back", "unknown"]))
def test_fast_event_bytes_equal_the_pydantic_bytes(payload, device, site, source, type, ts, seq,
                                                    priority, clock):
    kw = dict(device=device, site=site, type=type, source=source, payload=payload,
              priority=priority, clock=clock, ts=ts)
    try:
        event = make_event(**kw)
    except EventInvalid:
        with pytest.raises(EventInvalid):  # refused only where pydantic refuses too
            _make_checked(**kw)
        return
    checked = _make_checked(**{**kw, "ts": event.ts})
    assert event.model_dump() == {**checked.model_dump(), "id": event.id}
    try:
        old = _old_bytes(event, seq)
    except ValueError:  # a lone surrogate: refused by both
        with pytest.raises(EventInvalid):
            wire(event)
        return
    _id, _type, _prio, ts_text, head, tail = wire(event)
    assert head + str(seq).encode() + tail == old
    assert ts_text == event.model_dump(mode="json")["ts"]
    stored = with_seq(event, seq)
    assert stored.canonical_bytes() == old == stored.model_copy().canonical_bytes()
    assert stored == event.model_copy(update={"seq": seq})
    assert event.canonical_bytes() == _old_bytes(event, None)


@pytest.mark.parametrize("payload", [
    {"x": float("nan"), "y": float("inf")},   # pydantic writes null
    {"d": datetime(2024, 1, 2, tzinfo=UTC)},  # not plain JSON: pydantic's JSON mode decides
    {"nested": {1: "int key"}},
    {"t": (1, [2, {"k": -0.0}])},
    {"big": 10**30, "f": 1e16, "g": 5e-324},
    {"s": "\u2028\x00\"\\ü😀"},
    {"u": uuid.UUID(int=7), "e": _Lane.IN, "n": 1},  # a native encoder would take these itself
    {"i": 2**64, "j": -(2**63) - 1, "k": "x"},  # past a native encoder's 64 bits
])
def test_unusual_payloads_give_the_old_bytes(payload):
    event = make_event(device="d-1", site="s-1", type="sim.x", source="drv", payload=payload)
    *_, head, tail = wire(event)
    assert head + b"7" + tail == _old_bytes(event, 7)


def test_canonical_json_refuses_lone_surrogates_and_nan():
    for bad in ({"k": "\ud800"}, {"k": float("nan")}, {"k": float("-inf")}):
        with pytest.raises(ValueError):
            canonical_json(bad)


@pytest.mark.parametrize("kw", [{"payload": {"k": "\ud800"}}, {"payload": {"\udfff": 1}},
                                {"source": "a\ud800"}, {"payload": {"k": ["\udc00"]}},
                                {"source": "a\ud800", "payload": {"n": 1}}, {"site": "\udc00", "payload": {"n": 1}},
                                {"device": "d\udfff", "payload": {"n": 1.5}}])
def test_lone_surrogates_are_treated_as_before(kw):
    """Refused where the old path refused; a key pydantic rewrote (U+FFFD) is rewritten still."""
    event = make_event(**{"device": "d-1", "site": "s-1", "type": "sim.x", "source": "drv", **kw})
    try:
        old = _old_bytes(event, 3)
    except ValueError:
        with pytest.raises(EventInvalid, match="surrogates not allowed"):
            wire(event)
        with pytest.raises(ValueError):
            event.canonical_bytes()
        return
    *_, head, tail = wire(event)
    assert head + b"3" + tail == old


@pytest.mark.parametrize("bad", [
    {"type": "NotAType"}, {"type": "sim.x\n"}, {"priority": "urgent"}, {"clock": "maybe"}, {"payload": {1: "x"}},
    {"ts": datetime(2024, 1, 1)}, {"device": 5}, {"payload": [1, 2]},
])
def test_invalid_fields_are_refused_as_before(bad):
    args = {"device": "d-1", "site": "s-1", "type": "sim.x", "source": "drv", **bad}
    with pytest.raises(EventInvalid) as fast:
        make_event(**args)
    with pytest.raises(EventInvalid) as checked:
        _make_checked(**{"payload": {}, "priority": "normal", "clock": "synced", "ts": None, **args})
    assert str(fast.value) == str(checked.value)


def test_the_payload_is_copied_and_the_event_is_frozen():
    payload = {"n": 1}
    event = make_event(device="d-1", site="s-1", type="sim.x", source="drv", payload=payload)
    payload["n"] = 2
    assert event.payload == {"n": 1}
    with pytest.raises(ValidationError):
        event.site = "elsewhere"
    assert json.loads(event.canonical_bytes())["payload"] == {"n": 1}
    assert Event.from_bytes(event.canonical_bytes()) == event


def test_copies_never_change_the_fields_set_events_share():
    before = set(events._FIELDS_SET)
    event = make_event(device="d-1", site="s-1", type="sim.x", source="drv", payload={"n": 1})
    assert event.model_copy(update={"seq": 4}).model_fields_set == before | {"seq"}
    copied = with_seq(event, 3).model_copy(update={"payload": {}}, deep=True)
    copied.model_fields_set.add("v")  # a copy, as pydantic's is the model's own
    assert events._FIELDS_SET == before == event.model_fields_set and event.seq is None
    assert with_seq(event, 3).model_fields_set == before | {"seq"} == copied.model_fields_set


def test_set_seqs_sets_them_in_place_and_copies_what_it_cannot_change():
    class Sub(Event):
        pass

    made = make_event(device="d-1", site="s-1", type="sim.x", source="drv", payload={"n": 1})
    copied = made.model_copy()  # a plain Event, but not with make_event's fields set
    sub = Sub.model_validate(made.model_dump())
    batch = [made, copied, made, sub]
    set_seqs(batch, 5)
    assert batch[0] is made and batch[1] is copied and made.seq == 5 and copied.seq == 6
    assert batch[2] is not made and batch[2].seq == 7 and batch[2].id == made.id  # given twice
    assert batch[3] is not sub and batch[3].seq == 8 and sub.seq is None
    assert all("seq" in e.model_fields_set for e in batch)
    assert [e.canonical_bytes() for e in batch[:3]] == [
        _old_bytes(made, 5), _old_bytes(made, 6), _old_bytes(made, 7)]


_flat = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | st.text(max_size=12)
                        | st.integers(-(2**64), 2**64), max_size=8)


@pytest.mark.skipif(_event_bytes.dumps is None, reason="no native encoder installed: the standard "
                    "library's is the only path (the tests above)")
@settings(max_examples=300, deadline=None)
@given(payload=_flat)
def test_the_native_encoder_writes_what_the_standard_library_writes(payload):
    assert _event_bytes.payload_json(payload) == "".join(_event_bytes.encode_plain(payload, 0))


@pytest.mark.skipif(_event_bytes.dumps is None, reason="no native encoder installed")
def test_the_native_encoder_escapes_every_character_as_the_standard_library_does():
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 4096):
        text = "".join(chars[start:start + 4096])
        payload = {text: text, text[:2]: text[-3:], "n": start}
        assert _event_bytes.payload_json(payload) == "".join(_event_bytes.encode_plain(payload, 0))
