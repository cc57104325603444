"""The event envelope: the one record every driver emits and central receives.

Wire form is compact JSON. ``canonical_bytes`` is the exact byte string that is
stored, hashed into the audit chain and published, so all three agree.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import EventInvalid

SCHEMA_VERSION = 1
Priority = Literal["alarm", "normal", "telemetry"]
# How far the device trusted its own wall clock when the event was made.
ClockState = Literal["synced", "unsynced", "stepped_back", "unknown"]
PRIORITIES: tuple[str, ...] = ("alarm", "normal", "telemetry")

_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$")
MAX_SEQ = 2**63 - 1


class Event(BaseModel):
    """One thing that happened on a device, as stored locally and sent to central."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # The stored form (see ``wire``), made once: a slot, so neither a field nor compared,
    # copied or pickled; a copy (model_copy) makes its own.
    __slots__ = ("_wire",)

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

    @property
    def family(self) -> str:
        return self.type.split(".", 1)[0]

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


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8. Used for hashing and signing.

    NaN and Infinity are refused (ValueError): they are not JSON, and central's parsers
    would reject the whole batch that carried them.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def printable(value: str, limit: int = 300) -> str:
    """``value`` cut to ``limit`` and safe to store: lone surrogates become ``\\udXXX`` escapes.

    For text taken from hostile input (an id, a file name) and put into an event:
    canonical JSON refuses lone surrogates, and one must not cost the whole event.
    """
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class _IdPool:
    """Event ids made 256 at a time from one draw of the kernel's CSPRNG.

    os.urandom releases the GIL around getrandom(2); with many producer threads every
    release costs a wait to get the GIL back, once per event. One draw per 256 ids keeps
    the ids as unpredictable without that, and they are formatted together (0.1 us an id).
    ``list.pop`` is atomic, so no lock is needed; two threads refilling at once only make
    more ids. A forked child drops the ids it
    inherited, so parent and child never hand out the same one.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self.ids: list[str] = []  # make_event pops from it directly
        os.register_at_fork(after_in_child=self.ids.clear)

    def take(self) -> str:
        try:
            return self.ids.pop()
        except IndexError:
            self.ids.extend(self._make())
            return self.take()

    def _make(self) -> list[str]:
        raw = bytearray(os.urandom(16 * self._BATCH))
        raw[6::16] = raw[6::16].translate(_VERSION_4)  # RFC 4122: version 4 in byte 6's high nibble
        raw[8::16] = raw[8::16].translate(_VARIANT)  # and binary 10 atop byte 8
        # Every id in C-level steps, no loop: as hex in groups of 4 digits, 40 characters
        # an id with its separator ("aaaa-bbbb-cccc-dddd-eeee-ffff-gggg-hhhh "), then the
        # dashes a UUID does not have are cut from every id at once, last first.
        text = bytearray(raw.hex("-", 2) + "-", "ascii")
        text[39::40] = b" " * self._BATCH
        del text[34::40]  # ... ffff-gggghhhh
        del text[29::39]  # ... ffffgggghhhh
        del text[4::38]  # aaaabbbb-cccc-dddd-eeee-ffffgggghhhh
        return text.decode().split()


_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
_ids = _IdPool()
_id_list = _ids.ids


def new_event_id() -> str:
    """A random (version 4) UUID, built without uuid.UUID."""
    return _ids.take()


# The fields make_event sets, shared by every event it builds: pydantic copies this set before
# it changes one (model_copy), and Event is frozen, so sharing it is safe and saves a set per event.
_FIELDS_SET = {"id", "device", "site", "type", "source", "priority", "clock", "payload", "ts"}
_FIELDS_SET_SEQ = {*_FIELDS_SET, "seq"}
_new_object, _set, _now = object.__new__, object.__setattr__, datetime.now
# Envelope fields (device, site, type, source, priority, clock) already validated once: their
# JSON fragments, the type, the priority's code and the event's fields as a dict to copy;
# bounded, so a flood of distinct types cannot grow it without limit.
_KNOWN: dict[tuple, tuple[str, str, str, str, str, int, dict]] = {}
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
    ``_known``); the payload's keys are checked here, and the event is serialised here, once
    (``wire``). Anything unusual (a subclass, a naive timestamp, a key that is not a string)
    takes pydantic's path, which coerces or refuses exactly as before.
    """
    known = _KNOWN.get((device, site, type, source, priority, clock)) or _known(
        (device, site, type, source, priority, clock))
    if not payload:
        payload = {}
    if known is not None and payload.__class__ is dict and (
            ts is None or (ts.__class__ is datetime and ts.tzinfo is not None)):
        copied, utc = dict(payload), _now(UTC) if ts is None else ts.astimezone(UTC)
        try:
            event_id = _id_list.pop()
        except IndexError:
            event_id = _ids.take()
        d = known[6].copy()
        d["id"], d["ts"], d["payload"] = event_id, utc, copied
        # What _render does, inline (a call less per event), with the id written unescaped:
        # the pool's ids are hex digits and dashes.
        payload_json = _payload_json(copied)
        if payload_json is not None:
            second = (utc.second, utc.minute, utc.hour, utc.day, utc.month, utc.year)
            cached, prefix = _ts_prefix
            if cached != second:
                prefix = _ts_second(utc, second)
            us = utc.microsecond
            ts_text = f"{prefix}.{us:06d}Z" if us else f"{prefix}Z"
            try:
                head = f'{known[0]}"{event_id}","payload":{payload_json}{known[1]}'.encode()
                tail = f"{known[2]}{ts_text}{known[3]}".encode()
            except UnicodeEncodeError:  # a lone surrogate: pydantic's path refuses it, as before
                payload_json = None
        if payload_json is not None or all(k.__class__ is str for k in copied):
            event = _new_object(Event)
            _set(event, "__dict__", d)
            _set(event, "__pydantic_fields_set__", _FIELDS_SET)
            _set(event, "__pydantic_extra__", None)
            _set(event, "__pydantic_private__", None)
            if payload_json is not None:  # else made on demand, by pydantic's path (see wire)
                _set(event, "_wire", (event_id, known[4], known[5], ts_text, head, tail))
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
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    fragments = _KNOWN[key] = (
        f'{{"clock":"{clock}","device":{encode_basestring(device)},"id":',
        f',"priority":"{priority}","seq":',
        f',"site":{encode_basestring(site)},"source":{encode_basestring(source)},"ts":"',
        f'","type":"{type}","v":{SCHEMA_VERSION}}}', type, _PRIORITY_CODE[priority],
        # The event's fields in pydantic's order, all but id, ts and payload set.
        {"v": SCHEMA_VERSION, "id": None, "device": device, "site": site, "seq": None, "ts": None,
         "type": type, "source": source, "priority": priority, "clock": clock, "payload": None})
    return fragments


def with_seq(event: Event, seq: int) -> Event:
    """A copy of the event with ``seq`` set (``model_copy`` without its cost: what pydantic's
    construction does, minus validating fields already valid)."""
    if event.__class__ is not Event or event.__pydantic_extra__ is not None:
        return event.model_copy(update={"seq": seq})
    stored = _new_object(Event)
    _set(stored, "__dict__", {**event.__dict__, "seq": seq})
    _set(stored, "__pydantic_fields_set__", _FIELDS_SET_SEQ)
    _set(stored, "__pydantic_extra__", None)
    _set(stored, "__pydantic_private__", event.__pydantic_private__)
    return stored


def set_seq(event: Event, seq: int) -> bool:
    """Give a stored event its ``seq`` in place (the store does, once, after the commit):
    False, and nothing changed, when it is not a plain Event or already has one."""
    d = event.__dict__
    if d["seq"] is not None or event.__class__ is not Event:
        return False
    d["seq"] = seq
    fields = event.__pydantic_fields_set__
    _set(event, "__pydantic_fields_set__", _FIELDS_SET_SEQ if fields is _FIELDS_SET else fields | {"seq"})
    return True


def set_seqs(events: list[Event], first: int) -> None:
    """Give committed events their seqs (``first``, ``first + 1``...) in place, as ``set_seq``
    does; an event that cannot take one (given twice, or not a plain Event) is replaced in
    the list by a copy with it (``with_seq``)."""
    for seq, event in enumerate(events, first):
        # Only make_event gives an Event these fields set, and a seq changes them: so this
        # is a plain Event without a seq yet (set_seq's common case, inline).
        if event.__pydantic_fields_set__ is _FIELDS_SET:
            event.__dict__["seq"] = seq
            _set(event, "__pydantic_fields_set__", _FIELDS_SET_SEQ)
        elif not set_seq(event, seq):
            events[seq - first] = with_seq(event, seq)


# ``ts`` up to the second as pydantic's JSON mode writes it (ISO 8601), for the second it was
# made for: formatted once per second. One tuple, swapped whole, so threads never mix the two.
_ts_prefix: tuple[tuple, str] = ((), "")


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


# The standard library's C encoder, made once with canonical_json's settings (json.dumps
# makes a new one per call). No circular-reference markers: the caller only hands it
# plain data (see _plain), where recursion ends.
_encode_plain = c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False, False)
_SCALARS = frozenset((str, int, float, bool, type(None)))
# What a native encoder (orjson, where installed) is given: exactly these, in a flat payload.
_NATIVE = frozenset((str, int, bool, type(None)))
try:
    import orjson as _orjson
except ImportError:
    _dumps, _NATIVE_OPTIONS = None, 0
else:
    _dumps = _orjson.dumps
    # Sorted keys; subclasses, datetimes and dataclasses refused (TypeError), never converted.
    _NATIVE_OPTIONS = (_orjson.OPT_SORT_KEYS | _orjson.OPT_PASSTHROUGH_SUBCLASS
                       | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS)


def _plain(value: Any, depth: int = 0) -> bool:
    """Only exact JSON types (dicts with str keys, lists, str, int, float, bool, None)?
    Those serialise the same whether or not pydantic's JSON mode looked at them first."""
    cls = value.__class__
    if cls in _SCALARS:
        return True
    if depth > 64:
        return False
    if cls is dict:
        for k, v in value.items():
            if k.__class__ is not str or not (v.__class__ in _SCALARS or _plain(v, depth + 1)):
                return False
        return True
    if cls is list or cls is tuple:
        for v in value:
            if not (v.__class__ in _SCALARS or _plain(v, depth + 1)):
                return False
        return True
    return False


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
    _set(event, "_wire", stored)
    return stored


def _payload_json(payload: dict) -> str | None:
    """``payload`` as canonical JSON; None when it holds anything but plain JSON data (NaN,
    a datetime, a subclass...): the caller then takes pydantic's path, which decides.

    A flat payload of strings, integers, booleans and None goes through orjson where it is
    installed: for those it writes exactly what the standard library writes. Floats it
    writes otherwise (1e+16 as 1e16), enums and UUIDs it would take itself, integers past
    64 bits it refuses: those take the standard library's encoder, as before.
    """
    native = _dumps
    for k, v in payload.items():  # flat payloads: checked here; anything nested: _plain
        if k.__class__ is not str:
            return None
        if v.__class__ not in _NATIVE:
            if v.__class__ is not float and not _plain(v, 1):
                return None
            native = None
    if native is not None:
        try:
            return native(payload, option=_NATIVE_OPTIONS).decode()
        except TypeError:  # an integer past 64 bits, a lone surrogate: as below
            pass
    try:
        return "".join(_encode_plain(payload, 0))
    except ValueError:  # NaN or Infinity: pydantic's JSON mode makes them null
        return None


def _ts_second(ts: datetime, second: tuple) -> str:
    """``ts`` up to the second, as pydantic's JSON mode writes it; kept for the next event."""
    global _ts_prefix
    prefix = ts.replace(microsecond=0).isoformat()[:-6]
    _ts_prefix = (second, prefix)
    return prefix


def _render(fragments: tuple, event_id: str, ts: datetime, payload: dict) -> Wire | None:
    """The stored form from the fragments of the envelope's fixed fields (``ts`` in UTC); None when the
    payload holds anything but plain JSON data or a lone surrogate (see ``make_event``, which
    does the same inline)."""
    payload_json = _payload_json(payload)
    if payload_json is None:
        return None
    second = (ts.second, ts.minute, ts.hour, ts.day, ts.month, ts.year)
    cached, prefix = _ts_prefix
    if cached != second:
        prefix = _ts_second(ts, second)
    us = ts.microsecond  # microseconds only when not zero, and Z: as pydantic writes it
    ts_text = f"{prefix}.{us:06d}Z" if us else f"{prefix}Z"
    try:
        return (event_id, fragments[4], fragments[5], ts_text,
                f'{fragments[0]}{encode_basestring(event_id)},"payload":{payload_json}{fragments[1]}'
                .encode(), f"{fragments[2]}{ts_text}{fragments[3]}".encode())
    except UnicodeEncodeError:  # a lone surrogate: pydantic's path refuses it as it always did
        return None


def _render_event(event: Event) -> Wire | None:
    d = event.__dict__
    if event.__class__ is not Event or d["v"] != SCHEMA_VERSION or d["ts"].tzinfo is not UTC:
        return None
    key = (d["device"], d["site"], d["type"], d["source"], d["priority"], d["clock"])
    fragments = _KNOWN.get(key) or _known(key)
    return None if fragments is None else _render(fragments, d["id"], d["ts"], d["payload"])


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
