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

    v: int = SCHEMA_VERSION
    id: str = Field(description="Globally unique; central's idempotency key.")
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
        if not _TYPE_RE.match(value):
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
        parts = envelope_parts(self)
        if parts is not None:
            head, tail, _ts = parts
            try:
                return f"{head}{'null' if self.seq is None else self.seq}{tail}".encode()
            except UnicodeEncodeError:
                pass  # a lone surrogate: the plain path refuses it as it always did
        return canonical_json(self.model_dump(mode="json"))

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
    the ids as unpredictable without that, and formatting them in one loop costs a fifth
    of formatting each on its own. ``list.pop`` is atomic, so no lock is needed; two
    threads refilling at once only make more ids. A forked child drops the ids it
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
        h = os.urandom(16 * self._BATCH).hex()
        # version 4 in the 13th digit; RFC 4122 variant (binary 10xx) in the 17th
        return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[h[i + 16]]}"
                f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, 32 * self._BATCH, 32)]


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
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
# Envelope fields (device, site, type, source, priority, clock) already validated once, with
# their JSON fragments; bounded, so a flood of distinct types cannot grow it without limit.
_KNOWN: dict[tuple, tuple[str, str, str, str]] = {}
_KNOWN_MAX = 4096
_PRIORITIES, _CLOCKS = frozenset(PRIORITIES), frozenset(("synced", "unsynced", "stepped_back", "unknown"))


def make_event(
    *, device: str, site: str, type: str, source: str, payload: dict[str, Any] | None = None,
    priority: str = "normal", clock: str = "synced", ts: datetime | None = None,
) -> Event:
    """Build and validate an event, turning pydantic's error into ours.

    The fields a driver repeats on every event are validated once per combination (see
    ``_known``); the payload's top-level keys are checked here. Anything unusual (a subclass,
    a naive timestamp, a key that is not a string) takes pydantic's path, which coerces or
    refuses exactly as before.
    """
    key = (device, site, type, source, priority, clock)
    if not payload:
        payload = {}
    if (ts is None or (ts.__class__ is datetime and ts.tzinfo is not None)) and \
            payload.__class__ is dict and (key in _KNOWN or _known(key)):
        for k in payload:
            if k.__class__ is not str:
                break  # pydantic coerces or refuses it, below
        else:
            try:
                event_id = _id_list.pop()
            except IndexError:
                event_id = _ids.take()
            event = _new_object(Event)
            _set(event, "__dict__", {
                "v": SCHEMA_VERSION, "id": event_id, "device": device, "site": site, "seq": None,
                "ts": _now(UTC) if ts is None else ts.astimezone(UTC), "type": type,
                "source": source, "priority": priority, "clock": clock, "payload": dict(payload)})
            _set(event, "__pydantic_fields_set__", _FIELDS_SET)
            _set(event, "__pydantic_extra__", None)
            _set(event, "__pydantic_private__", None)
            return event
    return _make_checked(device=device, site=site, type=type, source=source, payload=payload,
                         priority=priority, clock=clock, ts=ts)


def _known(key: tuple) -> bool:
    """Are these envelope fields valid? Checked once per combination, then remembered."""
    if key in _KNOWN:
        return True
    device, site, type, source, priority, clock = key
    if not (device.__class__ is site.__class__ is type.__class__ is source.__class__ is str
            and priority.__class__ is str and priority in _PRIORITIES
            and clock.__class__ is str and clock in _CLOCKS and _TYPE_RE.match(type)):
        return False
    if len(_KNOWN) >= _KNOWN_MAX:
        _KNOWN.clear()
    _KNOWN[key] = (f'{{"clock":"{clock}","device":{encode_basestring(device)},"id":',
                   f',"priority":"{priority}","seq":',
                   f',"site":{encode_basestring(site)},"source":{encode_basestring(source)},"ts":"',
                   f'","type":"{type}","v":{SCHEMA_VERSION}}}')
    return True


def with_seq(event: Event, seq: int) -> Event:
    """The event as stored: the same fields with ``seq`` set (``model_copy`` without its
    cost: what pydantic's construction does, minus validating fields already valid)."""
    if event.__class__ is not Event or event.__pydantic_extra__ is not None:
        return event.model_copy(update={"seq": seq})
    stored = _new_object(Event)
    _set(stored, "__dict__", {**event.__dict__, "seq": seq})
    _set(stored, "__pydantic_fields_set__", _FIELDS_SET_SEQ)
    _set(stored, "__pydantic_extra__", None)
    _set(stored, "__pydantic_private__", event.__pydantic_private__)
    return stored


_ts_cache: tuple[tuple, str] = ((), "")


def _ts_text(ts: datetime) -> str:
    """``ts`` (UTC) as pydantic's JSON mode writes it: ISO 8601, microseconds only when
    not zero, ``Z``. The part up to the second is formatted once per second."""
    global _ts_cache
    key = (ts.second, ts.minute, ts.hour, ts.day, ts.month, ts.year)
    cached_key, prefix = _ts_cache
    if cached_key != key:
        prefix = ts.replace(microsecond=0).isoformat()[:-6]
        _ts_cache = (key, prefix)
    us = ts.microsecond
    return f"{prefix}.{us:06d}Z" if us else f"{prefix}Z"


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


def envelope_parts(event: Event) -> tuple[str, str, str] | None:
    """The canonical JSON of ``event`` in two str pieces around the value of ``seq``, and
    ``ts`` as serialised; None when the event holds anything but plain JSON data (NaN, a
    datetime, a subclass...): the caller then takes the pydantic path, which decides."""
    d = event.__dict__
    if event.__class__ is not Event or d["v"] != SCHEMA_VERSION or d["ts"].tzinfo is not UTC:
        return None
    key = (d["device"], d["site"], d["type"], d["source"], d["priority"], d["clock"])
    fragments = _KNOWN.get(key)
    payload = d["payload"]
    if fragments is None:
        return None
    for k, v in payload.items():  # flat payloads: checked here; anything nested: _plain
        if k.__class__ is not str or (v.__class__ not in _SCALARS and not _plain(v, 1)):
            return None
    try:
        payload_json = "".join(_encode_plain(payload, 0))
    except ValueError:  # NaN or Infinity: pydantic's JSON mode makes them null
        return None
    ts = _ts_text(d["ts"])
    clock_device_id, priority_seq, site_source_ts, type_v = fragments
    return (f'{clock_device_id}{encode_basestring(d["id"])},"payload":{payload_json}{priority_seq}',
            f'{site_source_ts}{ts}{type_v}', ts)
