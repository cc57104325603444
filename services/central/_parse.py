"""Turning received MQTT messages into rows: events, device states and rejects.

Validation is deliberately shallow and fast: the envelope fields central
relies on (id, device, site, seq, type, ts) are checked; the payload is kept as
sent, and unknown event types are accepted (the contract says consumers must).
A message that fails is not lost: it becomes a reject row with its reason.

What a hostile device could send to stop the ingest is refused here, per message,
before it reaches a database (docs/fleet.md, "Hostile devices"): a message over
``MAX_MESSAGE_BYTES``, JSON nested deeper than ``MAX_DEPTH``, ``NaN``/``Infinity``
(or a number so large it parses as one), a duplicated key, a lone UTF-16 surrogate
or a NUL character in any string (neither can be stored as PostgreSQL text or
jsonb), a ``seq`` or ``boot_seq`` beyond a 64-bit integer, a time a UTC
datetime cannot hold, and state fields of the wrong type.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.mqtt.topics import ROOT

_PRIORITIES = {"alarm", "normal", "telemetry"}
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # default of --max-message-bytes; the device sends 256 KiB batches
MAX_DEPTH = 64                       # JSON nesting of a whole message (an event payload sits at depth 3)
MAX_NAME = 256                       # characters of an id, type, store, site or device (indexed columns)
SEQ_MAX = 2**63 - 1                  # the contract's maximum; SQLite INTEGER and PostgreSQL bigint
REJECTED_PAYLOAD_KEPT = 64 * 1024    # of a message over the size limit, the first bytes kept as evidence
# "\u0000" escaped in JSON text (an even number of backslashes before it is a literal backslash).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Parsed:
    """The rows one batch of messages produces."""

    events: list[tuple] = field(default_factory=list)   # see EVENT_COLUMNS
    states: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[tuple[str, str, bytes]] = field(default_factory=list)  # topic, reason, payload
    last_seen: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # device -> (site, received)
    newest_ts: datetime | None = None  # of the events in the batch: for the lag metric


EVENT_COLUMNS = ("id", "device", "site", "store", "seq", "type", "priority", "ts", "received_at", "body")


class Rejected(ValueError):
    """A message central cannot store as events or state; the reason says why."""


def utc(text: Any, what: str) -> datetime:
    """ISO 8601 with a zone -> aware UTC datetime (``Z`` and ``+00:00`` both accepted)."""
    if not isinstance(text, str):
        raise Rejected(f"{what}: expected an ISO 8601 string, got {type(text).__name__}")
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Rejected(f"{what}: {text!r} is not ISO 8601") from None
    if value.tzinfo is None:
        raise Rejected(f"{what}: {text!r} has no time zone")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Rejected(f"{what}: {text!r} is out of range in UTC (expected years 1 to 9999)") from None


def split_topic(topic: str) -> tuple[str, str, str]:
    """``edge/v1/{site}/{device}/{rest}`` -> (site, device, rest)."""
    root = ROOT + "/"
    if not topic.startswith(root):
        raise Rejected(f"topic {topic!r} is not under {ROOT}/")
    parts = topic[len(root):].split("/", 2)
    if len(parts) != 3:
        raise Rejected(f"topic {topic!r}: expected {ROOT}/SITE/DEVICE/...")
    if len(parts[0]) > MAX_NAME or len(parts[1]) > MAX_NAME:
        raise Rejected(f"topic {topic[:80]!r}...: site and device ids of at most {MAX_NAME} characters expected")
    return parts[0], parts[1], parts[2]


def _no_constant(name: str) -> Any:
    raise Rejected(f"{name} is not a JSON number (expected a finite number)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Rejected(f"number {text[:40]} is out of range (expected a finite number)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise Rejected(f"duplicate key {dup!r} in one object (expected each key once: "
                       "readers disagree on which value counts)")
    return doc


def _deeper(value: Any, levels: int) -> bool:
    """True when the dict or list ``value`` holds containers more than ``levels`` further down."""
    for item in value.values() if value.__class__ is dict else value:
        if item.__class__ is dict or item.__class__ is list:
            if levels == 0 or _deeper(item, levels - 1):
                return True
    return False


def load(payload: bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> Any:
    """Strict JSON of one message: anything a database could choke on later is refused here."""
    if len(payload) > max_bytes:
        raise Rejected(f"message of {len(payload)} bytes is over the ingest's limit of {max_bytes} bytes "
                       f"(--max-message-bytes); only its first {REJECTED_PAYLOAD_KEPT} bytes are kept here")
    if b"\\u0000" in payload and _NUL_ESCAPE.search(payload):
        raise Rejected("a string holds a NUL character (\\u0000), which cannot be stored "
                       "(expected text without U+0000)")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise Rejected(f"JSON nested too deeply (expected at most {MAX_DEPTH} levels)") from None
    if (doc.__class__ is dict or doc.__class__ is list) and _deeper(doc, MAX_DEPTH - 1):
        raise Rejected(f"JSON nested deeper than {MAX_DEPTH} levels (expected at most {MAX_DEPTH})")
    if "\\ud" in text or "\\uD" in text:  # only escapes can carry a lone surrogate: decoded UTF-8 has none
        _no_surrogates(doc, "")
    return doc


def _no_surrogates(doc: Any, where: str) -> None:
    stack = [(doc, where)]
    while stack:
        value, at = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise Rejected(f"{at or 'a string'}: holds a lone UTF-16 surrogate {value[:40]!r} "
                               "(expected text that can be UTF-8 encoded)")
        elif isinstance(value, dict):
            for k, v in value.items():
                if _SURROGATE.search(k):
                    raise Rejected(f"{at or 'an object'}: key {k[:40]!r} holds a lone UTF-16 surrogate "
                                   "(expected text that can be UTF-8 encoded)")
                stack.append((v, f"{at}.{k}" if at else k))
        elif isinstance(value, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(value))


def parse_into(out: Parsed, topic: str, payload: bytes, now: datetime,
               max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """Add the rows of one message to ``out``; a bad message adds one reject instead (never raises)."""
    try:
        site, device, rest = split_topic(topic)
        doc = load(payload, max_bytes)
        if not isinstance(doc, dict):
            raise Rejected("payload is not a JSON object")
        if rest == "state":
            out.states.append(_state(doc, site, device))
        elif rest.startswith("events/") or rest == "cmd/result":
            rows = _events(doc, site, device, now)
            out.events.extend(rows)
            # An event dated after its arrival (a moved clock, a forged year 9999) would hide the lag.
            newest = max((r[7] for r in rows if r[7] <= now), default=None)
            if newest is not None and (out.newest_ts is None or newest > out.newest_ts):
                out.newest_ts = newest
            out.last_seen[device] = (site, now)
        else:
            raise Rejected(f"topic {topic!r} is not one central ingests")
    except (Rejected, ValueError) as exc:  # json errors are ValueErrors
        out.rejects.append((topic, str(exc)[:500], bytes(payload[:REJECTED_PAYLOAD_KEPT]
                                                         if len(payload) > max_bytes else payload)))
    except Exception as exc:  # a message we did not foresee must not stop the ingest
        out.rejects.append((topic, f"could not be read ({type(exc).__name__}: {exc})"[:500], bytes(payload)))


def _events(doc: dict, site: str, device: str, now: datetime) -> list[tuple]:
    events = doc.get("events")
    if not isinstance(events, list) or not events:
        raise Rejected("expected {\"events\": [...]} with at least one event")
    store = doc.get("store") or ""
    if not isinstance(store, str) or len(store) > MAX_NAME:
        raise Rejected(f"store: expected a string of at most {MAX_NAME} characters, got {_short(store)}")
    rows = []
    for i, ev in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            raise Rejected(f"{where}: not an object")
        for key in ("id", "type"):
            if not isinstance(ev.get(key), str) or not ev[key] or len(ev[key]) > MAX_NAME:
                raise Rejected(f"{where}.{key}: expected a non-empty string of at most {MAX_NAME} characters, "
                               f"got {_short(ev.get(key))}")
        if ev.get("device") != device or ev.get("site") != site:
            raise Rejected(f"{where}: device/site {ev.get('device')!r}/{ev.get('site')!r} "
                           f"do not match the topic's {device!r}/{site!r}")
        seq = ev.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= SEQ_MAX:
            raise Rejected(f"{where}.seq: expected an integer from 1 to {SEQ_MAX} (gap detection needs it), "
                           f"got {_short(seq)}")
        ev_store = ev.get("store") or store
        if not isinstance(ev_store, str) or len(ev_store) > MAX_NAME:
            raise Rejected(f"{where}.store: expected a string of at most {MAX_NAME} characters, "
                           f"got {_short(ev_store)}")
        priority = ev.get("priority", "normal")
        if priority not in _PRIORITIES:
            raise Rejected(f"{where}.priority: {priority!r} is not alarm, normal or telemetry")
        ts = utc(ev.get("ts"), f"{where}.ts")
        rows.append((ev["id"], device, site, ev_store, seq, ev["type"], priority, ts, now,
                     json.dumps(ev, separators=(",", ":"), ensure_ascii=False)))
    return rows


def _state(doc: dict, site: str, device: str) -> dict[str, Any]:
    if doc.get("device") != device or doc.get("site") != site:
        raise Rejected(f"state: device/site {doc.get('device')!r}/{doc.get('site')!r} do not match the topic")
    online = doc.get("online")
    boot_seq = doc.get("boot_seq")
    if not isinstance(online, bool) or not isinstance(boot_seq, int) or isinstance(boot_seq, bool):
        raise Rejected("state: expected online (bool) and boot_seq (int)")
    if not 0 <= boot_seq <= SEQ_MAX:
        raise Rejected(f"state.boot_seq: expected an integer from 0 to {SEQ_MAX}, got {_short(boot_seq)}")
    for key in ("role", "version", "store_id", "reason"):
        if doc.get(key) is not None and (not isinstance(doc[key], str) or len(doc[key]) > MAX_NAME):
            raise Rejected(f"state.{key}: expected a string of at most {MAX_NAME} characters or null, "
                           f"got {_short(doc[key])}")
    ts = doc.get("ts")
    return {"device": device, "site": site, "role": doc.get("role"), "version": doc.get("version"),
            "store": doc.get("store_id"), "online": online, "boot_seq": boot_seq,
            "started_at": utc(doc.get("started_at"), "state.started_at"),
            "state_at": utc(ts, "state.ts") if ts is not None else None,
            "offline_reason": doc.get("reason")}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"
