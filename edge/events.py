"""The event envelope: the one record every driver emits and central receives.

Wire form is compact JSON. ``canonical_bytes`` is the exact byte string that is
stored, hashed into the audit chain and published, so all three agree.

``Event`` is a plain frozen object, not a pydantic model: a driver makes thousands a
second, and building a pydantic object cost a sixth of an event's Python.
``EventModel`` is its validator and schema: ``Event(...)``, ``Event.model_validate``,
``model_validate_json`` and ``from_bytes`` validate through it and refuse what it refuses;
``make_event`` checks the same rules itself (the envelope's fields once per combination).
"""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge._event_bytes import NATIVE as _NATIVE
from edge._event_bytes import NATIVE_OPTIONS as _NATIVE_OPTIONS
from edge._event_bytes import (
    canonical_json,
    ids,
    native_bytes,
    payload_bytes,
    payload_json,
    printable,
)
from edge.errors import EventInvalid

__all__ = ["MAX_SEQ", "PRIORITIES", "SCHEMA_VERSION", "Event", "EventModel", "canonical_json",
           "make_event", "new_event_id", "printable", "set_seq", "set_seqs", "wire", "with_seq"]

SCHEMA_VERSION = 1
Priority = Literal["alarm", "normal", "telemetry"]
# How far the device trusted its own wall clock when the event was made.
ClockState = Literal["synced", "unsynced", "stepped_back", "unknown"]
PRIORITIES: tuple[str, ...] = ("alarm", "normal", "telemetry")

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")
MAX_SEQ = 2**63 - 1


class EventModel(BaseModel):
    """One thing that happened on a device, as stored locally and sent to central."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = SCHEMA_VERSION
    id: str = Field(description="Globally unique (a random UUID); central's idempotency key together with "
                                "the device (topic), so one device cannot use another's ids to make central "
                                "drop its events.")
    device: str
    site: str
    seq: int | None = Field(
        default=None, ge=1, le=MAX_SEQ,
        description="Per-device, strictly increasing, never reused; assigned by the store.",
    )
    ts: datetime = Field(description="UTC time the event happened (ISO 8601).")
    type: str = Field(description="family.name, e.g. turnstile.passage.")
    source: str = Field(description="Driver instance (or subsystem) that produced it.")
    priority: Priority = "normal"
    clock: ClockState = Field(
        default="synced",
        description="synced | unsynced | stepped_back (after a backwards jump) | unknown.",
    )
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type_is_family_name(cls, value: str) -> str:
        if not _TYPE_RE.fullmatch(value):
            raise ValueError("must be 'family.name' in lower case, e.g. 'turnstile.passage'")
        return value

    @field_validator("ts")
    @classmethod
    def _ts_is_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (UTC)")
        return value.astimezone(UTC)


_FIELDS = tuple(EventModel.model_fields)  # v, id, device, site, seq, ts, type, source, priority, clock, payload


class _Slots:
    """An Event's storage: its envelope (``_KNOWN``'s tuple: the fields it shares with every
    event of its driver), its own fields, its stored form (``wire``), ts as a datetime (made
    from the stored text when first read) and the fields given to the validator."""

    __slots__ = ("_env", "id", "seq", "payload", "_wire", "_ts", "_fields")


class _Building(_Slots):
    """An Event being built: settable, then made an Event (same layout) by make_event."""

    __slots__ = ()


_set_env, _set_id, _set_seq, _set_payload, _set_wire, _set_ts, _set_fields = (
    getattr(_Slots, name).__set__ for name in _Slots.__slots__)


def _env_field(i: int, doc: str) -> property:
    return property(lambda self: self._env[i], doc=doc)


class Event(_Slots):
    """One thing that happened on a device, as stored locally and sent to central: frozen
    (setting a field raises); the store gives it its ``seq`` once, when it is committed."""

    __slots__ = ()

    type = _env_field(4, "family.name, e.g. turnstile.passage.")
    device = _env_field(6, "The device that made it.")
    site = _env_field(7, "The device's site.")
    source = _env_field(8, "Driver instance (or subsystem) that produced it.")
    priority = _env_field(9, "alarm | normal | telemetry.")
    clock = _env_field(10, "synced | unsynced | stepped_back (after a backwards jump) | unknown.")
    v = _env_field(11, "Schema version.")

    def __init__(self, /, **data: Any) -> None:
        _fill(self, EventModel(**data))

    @property
    def ts(self) -> datetime:
        """UTC time the event happened."""
        try:
            return self._ts
        except AttributeError:  # made by make_event: from the stored text, once
            ts = _from_iso(self._wire[3])
            _set_ts(self, ts)
            return ts

    @property
    def family(self) -> str:
        return self._env[4].split(".", 1)[0]

    def canonical_bytes(self) -> bytes:
        """The exact bytes stored, chained and published for this event."""
        try:
            w = wire(self)
        except EventInvalid:  # not JSON: canonical_json says why (ValueError), as it always did
            return canonical_json(self.model_dump(mode="json"))
        seq = self.seq
        return b"%bnull%b" % (w[4], w[5]) if seq is None else b"%b%d%b" % (w[4], seq, w[5])

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> Event:
        return cls.model_validate_json(raw)

    # -- what the pydantic model this once was offers, through EventModel -----------------

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Event:
        if isinstance(obj, cls):
            return obj
        return _fill(_new(cls), EventModel.model_validate(obj, **kwargs))

    @classmethod
    def model_validate_json(cls, data: bytes | str, **kwargs: Any) -> Event:
        return _fill(_new(cls), EventModel.model_validate_json(data, **kwargs))

    @classmethod
    def model_json_schema(cls, **kwargs: Any) -> dict[str, Any]:
        return EventModel.model_json_schema(**kwargs)

    @property
    def model_fields_set(self) -> set[str]:
        try:
            given = self._fields
        except AttributeError:
            given = _FIELDS_SET  # made by make_event
        return {*given, "seq"} if self.seq is not None else set(given)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return self._model().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        return self._model().model_dump_json(**kwargs)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Event:
        """A copy, with ``update`` applied unvalidated (as pydantic's model_copy does)."""
        values = dict(zip(_FIELDS, self._values(), strict=True))
        unknown = set(update or ()) - values.keys()
        if unknown:
            raise ValueError(f"Event has no field {', '.join(sorted(unknown))}")
        values.update(update or {})
        if deep:
            values = copy.deepcopy(values)
        return _build(self.__class__, values, self.model_fields_set | set(update or ()))

    def _model(self) -> EventModel:
        return EventModel.model_construct(self.model_fields_set, **dict(zip(_FIELDS, self._values(), strict=True)))

    def _values(self) -> tuple:
        env = self._env
        return (env[11], self.id, env[6], env[7], self.seq, self.ts, env[4], env[8], env[9], env[10],
                self.payload)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.__class__ is other.__class__ and self._values() == other._values()

    def __hash__(self) -> int:
        return hash((self.__class__, *self._values()))  # TypeError, as a frozen model's: a dict payload

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in zip(_FIELDS, self._values(), strict=True))
        return f"{self.__class__.__name__}({fields})"

    def __reduce__(self) -> tuple:
        return _build, (self.__class__, dict(zip(_FIELDS, self._values(), strict=True)), self.model_fields_set)

    def __setattr__(self, name: str, value: Any) -> None:
        raise ValidationError.from_exception_data(
            self.__class__.__name__, [{"type": "frozen_instance", "loc": (name,), "input": value}])

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)


_from_iso = datetime.fromisoformat


def _build(cls: type[Event], values: dict[str, Any], fields: set[str]) -> Event:
    """An event of ``cls`` with these field values (not validated: a copy's)."""
    event = _new(cls)
    _set_env(event, _envelope(values["device"], values["site"], values["type"], values["source"],
                              values["priority"], values["clock"], values["v"]))
    _set_id(event, values["id"])
    _set_seq(event, values["seq"])
    _set_payload(event, values["payload"])
    _set_ts(event, values["ts"])
    _set_fields(event, frozenset(fields))
    return event


def _fill(event: Event, m: EventModel) -> Event:
    _set_env(event, _envelope(m.device, m.site, m.type, m.source, m.priority, m.clock, m.v))
    _set_id(event, m.id)
    _set_seq(event, m.seq)
    _set_payload(event, m.payload)
    _set_ts(event, m.ts)
    _set_fields(event, frozenset(m.model_fields_set))
    return event


def _envelope(device: Any, site: Any, type: Any, source: Any, priority: Any, clock: Any, v: Any) -> tuple:
    """``_KNOWN``'s tuple for these fields; without fragments when they are not ones make_event
    would take (wire then renders the event through EventModel)."""
    key = (device, site, type, source, priority, clock)
    if v.__class__ is int and v == SCHEMA_VERSION:
        known = _KNOWN.get(key) or _known(key)
        if known is not None:
            return known
    return (None, None, None, None, type, _PRIORITY_CODE.get(priority), *key[:2], source, priority, clock, v,
            None, None)


_id_list = ids.ids


def new_event_id() -> str:
    """A random (version 4) UUID, built without uuid.UUID."""
    return ids.take()


# The fields make_event gives the validator's view of an event (model_fields_set): all but v.
_FIELDS_SET = frozenset({"id", "device", "site", "type", "source", "priority", "clock", "payload", "ts"})
_new, _now, _time_ns, _type = object.__new__, datetime.now, time.time_ns, type
# Envelope fields (device, site, type, source, priority, clock) already validated once: the
# JSON fragments around the event's own fields, the type, the priority's code, the six
# fields and the schema version (an Event's ``_env``); bounded, so a flood of distinct
# types cannot grow it without limit.
_KNOWN: dict[tuple, tuple] = {}
_KNOWN_MAX = 4096
_PRIORITIES, _CLOCKS = frozenset(PRIORITIES), frozenset(("synced", "unsynced", "stepped_back", "unknown"))
# A priority as the store keeps it: its index in PRIORITIES (edge.store._schema.PRIORITY_CODE).
_PRIORITY_CODE = {name: code for code, name in enumerate(PRIORITIES)}

# An event as the store writes it (see ``wire``): id, type, priority code, ts as stored, and
# the canonical JSON before the value of ``seq`` and after it.
Wire = tuple[str, str, int, str, bytes, bytes]


def make_event(
    *, device: str, site: str, type: str, source: str, payload: dict[str, Any] | None = None,
    priority: str = "normal", clock: str = "synced", ts: datetime | None = None,
) -> Event:
    """Build and validate an event, turning pydantic's error into ours.

    The fields a driver repeats on every event are validated once per combination (see
    ``_known``); the payload is checked here, and the event is serialised here, once
    (``wire``), its time taken in nanoseconds and written from a prefix made once a second.
    Anything unusual (a given time, a payload that is not plain JSON, a key that is not a
    string) takes ``_make_other``, and pydantic's path where the fields need it.
    """
    known = _KNOWN.get((device, site, type, source, priority, clock)) or _known(
        (device, site, type, source, priority, clock))
    if known is not None and _type(payload) is dict and ts is None:
        copied = payload.copy()
        for value in copied.values():  # the keys: native_bytes refuses any but str
            if _type(value) not in _NATIVE:
                body = payload_bytes(copied)
                break
        else:
            try:
                body = native_bytes(copied, option=_NATIVE_OPTIONS)
            except TypeError:  # a key that is not str, an integer past 64 bits, a lone surrogate
                body = payload_bytes(copied)
        if body is not None:
            ns = _time_ns()
            try:
                event_id = _id_list.pop()
            except IndexError:
                event_id = ids.take()
            second, prefix = _ts_prefix
            off = ns - second
            if not 0 <= off < 1_000_000_000:
                second, prefix = _ts_second(ns)
                off = ns - second
            us = off // 1000  # microseconds only when not zero, and Z: as pydantic writes it
            ts_text = f"{prefix}.{_DIGITS[us // 1000]}{_DIGITS[us % 1000]}Z" if us else f"{prefix}Z"
            event = _Building()
            event._env = known
            event.id = event_id
            event.seq = None
            event.payload = copied
            event._wire = (event_id, known[4], known[5], ts_text,  # the pool's ids: hex digits and dashes
                           b"".join((known[12], event_id.encode(), b'","payload":', body, known[13])),
                           f"{known[2]}{ts_text}{known[3]}".encode())
            event.__class__ = Event  # frozen from here on
            return event
    return _make_other(device=device, site=site, type=type, source=source, payload=payload,
                       priority=priority, clock=clock, ts=ts)


def _make_other(*, device, site, type, source, payload, priority, clock, ts) -> Event:
    """make_event's other cases: no payload, a given time, or a payload the fast path does
    not encode (its stored form is then made by ``wire``, through EventModel where needed)."""
    known = _KNOWN.get((device, site, type, source, priority, clock)) or _known(
        (device, site, type, source, priority, clock))
    if not payload:
        payload = {}
    if known is not None and payload.__class__ is dict and (
            ts is None or (ts.__class__ is datetime and ts.tzinfo is not None)):
        copied = dict(payload)
        if all(k.__class__ is str for k in copied):
            event = _new(_Building)
            event._env, event.id, event.seq, event.payload = known, new_event_id(), None, copied
            event._ts = _now(UTC) if ts is None else ts.astimezone(UTC)
            event.__class__ = Event
            return event
    return _make_checked(device=device, site=site, type=type, source=source, payload=payload,
                         priority=priority, clock=clock, ts=ts)


def _known(key: tuple) -> tuple | None:
    """The fragments of these envelope fields, if they are valid: checked once per
    combination, then remembered."""
    device, site, type, source, priority, clock = key
    if not (device.__class__ is site.__class__ is type.__class__ is source.__class__ is str
            and priority.__class__ is str and priority in _PRIORITIES
            and clock.__class__ is str and clock in _CLOCKS and _TYPE_RE.fullmatch(type)):
        return None
    head = f'{{"clock":"{clock}","device":{encode_basestring(device)},"id":'
    middle = f',"priority":"{priority}","seq":'
    after_seq = f',"site":{encode_basestring(site)},"source":{encode_basestring(source)},"ts":"'
    try:  # every fragment is written as UTF-8, make_event's head at once
        head_bytes, middle_bytes, _ = f'{head}"'.encode(), middle.encode(), after_seq.encode()
    except UnicodeEncodeError:  # a lone surrogate: pydantic's path, which keeps it (wire refuses it)
        return None
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    fragments = _KNOWN[key] = (
        head, middle, after_seq, f'","type":"{type}","v":{SCHEMA_VERSION}}}', type, _PRIORITY_CODE[priority],
        device, site, source, priority, clock, SCHEMA_VERSION, head_bytes, middle_bytes)
    return fragments


def with_seq(event: Event, seq: int) -> Event:
    """A copy of the event with ``seq`` set, its stored form shared."""
    stored = _new(event.__class__)
    for name in _Slots.__slots__:
        try:
            value = getattr(event, name)
        except AttributeError:  # not made yet (_wire, _ts) or given by make_event (_fields)
            continue
        getattr(_Slots, name).__set__(stored, value)
    _set_seq(stored, seq)
    return stored


def set_seq(event: Event, seq: int) -> bool:
    """Give a stored event its ``seq`` in place (the store does, once, after the commit):
    False, and nothing changed, when it is not a plain Event or already has one."""
    if event.seq is not None or event.__class__ is not Event:
        return False
    _set_seq(event, seq)
    return True


def set_seqs(events: list[Event], first: int) -> None:
    """Give committed events their seqs (``first``, ``first + 1``...) in place, as ``set_seq``
    does; an event that cannot take one (given twice, or not a plain Event) is replaced in
    the list by a copy with it (``with_seq``)."""
    for seq, event in enumerate(events, first):
        if event.seq is None and _type(event) is Event:
            _set_seq(event, seq)
        else:
            events[seq - first] = with_seq(event, seq)


# ``ts`` up to the second as pydantic's JSON mode writes it (ISO 8601), for the second (since
# the epoch) it was made for: formatted once per second. One tuple, swapped whole, so threads
# never mix the two.
_ts_prefix: tuple[int, str] = (-(2**62), "")
_DIGITS = [f"{n:03d}" for n in range(1000)]  # the microseconds, three digits at a time


def _ts_second(ns: int) -> tuple[int, str]:
    """(the second holding ``ns``, in nanoseconds since the epoch; that second as pydantic's
    JSON mode writes it), kept for the next event."""
    global _ts_prefix
    second = ns - ns % 1_000_000_000
    _ts_prefix = (second, datetime.fromtimestamp(second // 1_000_000_000, UTC).isoformat()[:-6])
    return _ts_prefix


def _make_checked(*, device, site, type, source, payload, priority, clock, ts) -> Event:
    try:
        return Event(
            id=new_event_id(), device=device, site=site, type=type, source=source,
            priority=priority, clock=clock, payload=payload,
            ts=ts or datetime.now(UTC),
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise EventInvalid(f"invalid event {type!r} from {source!r}: {problems}") from None


def wire(event: Event) -> Wire:
    """``event`` as the store writes it: (id, type, priority code, ts as stored, its
    canonical JSON before the value of ``seq``, after it). Made once and kept in the event
    (make_event makes it as it builds the event). EventInvalid when the payload is not JSON.

    The body is canonical JSON with sorted keys, so the top-level ``"seq"`` sits between
    ``priority`` and ``site``; everything after it is a string or a number, where an
    unescaped quote cannot occur, so the last ``,"seq":0,`` is that key.
    """
    try:
        return event._wire
    except AttributeError:
        pass
    stored = _render_event(event) or _render_checked(event)
    _set_wire(event, stored)
    return stored


def _render_event(event: Event) -> Wire | None:
    """The stored form from the envelope's fragments; None when the event is not one make_event
    would make, or its payload holds anything but plain JSON data or a lone surrogate."""
    fragments, ts = event._env, event.ts
    if event.__class__ is not Event or fragments[0] is None or ts.tzinfo is not UTC:
        return None
    body = payload_json(event.payload)
    if body is None:
        return None
    ts_text = ts.isoformat()[:-6] + "Z"  # microseconds only when not zero: as pydantic writes it
    try:
        return (event.id, fragments[4], fragments[5], ts_text,
                f'{fragments[0]}{encode_basestring(event.id)},"payload":{body}{fragments[1]}'.encode(),
                f"{fragments[2]}{ts_text}{fragments[3]}".encode())
    except UnicodeEncodeError:  # a lone surrogate: pydantic's path refuses it as it always did
        return None


def _render_checked(event: Event) -> Wire:
    """Through pydantic's JSON mode and canonical_json: whatever the event holds."""
    try:
        data = event.model_dump(mode="json")
        data["seq"] = 0
        body = canonical_json(data)
    except ValueError as exc:  # NaN, undecodable bytes, objects pydantic cannot serialise
        raise EventInvalid(f"event {event.type!r} from {event.source!r} cannot be stored: "
                           f"its payload is not JSON ({type(exc).__name__}: {exc})") from None
    cut = body.rfind(b',"seq":0,')
    return (event.id, event.type, _PRIORITY_CODE[event.priority], data["ts"],
            body[:cut + 7], body[cut + 8:])
