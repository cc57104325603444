"""Turning received MQTT messages into rows: events, device states and rejects.

Validation is deliberately shallow and fast: the envelope fields central
relies on (id, device, site, seq, type, ts) are checked; the payload is kept as
sent, and unknown event types are accepted (the contract says consumers must).
A message that fails is not lost: it becomes a reject row with its reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edge.mqtt.topics import ROOT

_PRIORITIES = {"alarm", "normal", "telemetry"}


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
    return value.astimezone(UTC)


def split_topic(topic: str) -> tuple[str, str, str]:
    """``edge/v1/{site}/{device}/{rest}`` -> (site, device, rest)."""
    root = ROOT + "/"
    if not topic.startswith(root):
        raise Rejected(f"topic {topic!r} is not under {ROOT}/")
    parts = topic[len(root):].split("/", 2)
    if len(parts) != 3:
        raise Rejected(f"topic {topic!r}: expected {ROOT}/SITE/DEVICE/...")
    return parts[0], parts[1], parts[2]


def parse_into(out: Parsed, topic: str, payload: bytes, now: datetime) -> None:
    """Add the rows of one message to ``out``; a bad message adds one reject instead."""
    try:
        site, device, rest = split_topic(topic)
        doc = json.loads(payload)
        if not isinstance(doc, dict):
            raise Rejected("payload is not a JSON object")
        if rest == "state":
            out.states.append(_state(doc, site, device))
        elif rest.startswith("events/") or rest == "cmd/result":
            rows = _events(doc, site, device, now)
            out.events.extend(rows)
            newest = max(r[7] for r in rows)
            if out.newest_ts is None or newest > out.newest_ts:
                out.newest_ts = newest
            out.last_seen[device] = (site, now)
        else:
            raise Rejected(f"topic {topic!r} is not one central ingests")
    except (Rejected, ValueError) as exc:  # json errors are ValueErrors
        out.rejects.append((topic, str(exc)[:500], bytes(payload)))


def _events(doc: dict, site: str, device: str, now: datetime) -> list[tuple]:
    events = doc.get("events")
    if not isinstance(events, list) or not events:
        raise Rejected("expected {\"events\": [...]} with at least one event")
    store = doc.get("store") or ""
    if not isinstance(store, str):
        raise Rejected("store: expected a string")
    rows = []
    for i, ev in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            raise Rejected(f"{where}: not an object")
        for key in ("id", "type"):
            if not isinstance(ev.get(key), str) or not ev[key]:
                raise Rejected(f"{where}.{key}: expected a non-empty string")
        if ev.get("device") != device or ev.get("site") != site:
            raise Rejected(f"{where}: device/site {ev.get('device')!r}/{ev.get('site')!r} "
                           f"do not match the topic's {device!r}/{site!r}")
        seq = ev.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise Rejected(f"{where}.seq: expected an integer >= 1 (gap detection needs it), got {seq!r}")
        priority = ev.get("priority", "normal")
        if priority not in _PRIORITIES:
            raise Rejected(f"{where}.priority: {priority!r} is not alarm, normal or telemetry")
        ts = utc(ev.get("ts"), f"{where}.ts")
        rows.append((ev["id"], device, site, ev.get("store") or store, seq, ev["type"], priority, ts, now,
                     json.dumps(ev, separators=(",", ":"), ensure_ascii=False)))
    return rows


def _state(doc: dict, site: str, device: str) -> dict[str, Any]:
    if doc.get("device") != device or doc.get("site") != site:
        raise Rejected(f"state: device/site {doc.get('device')!r}/{doc.get('site')!r} do not match the topic")
    online = doc.get("online")
    boot_seq = doc.get("boot_seq")
    if not isinstance(online, bool) or not isinstance(boot_seq, int):
        raise Rejected("state: expected online (bool) and boot_seq (int)")
    ts = doc.get("ts")
    return {"device": device, "site": site, "role": doc.get("role"), "version": doc.get("version"),
            "store": doc.get("store_id"), "online": online, "boot_seq": boot_seq,
            "started_at": utc(doc.get("started_at"), "state.started_at"),
            "state_at": utc(ts, "state.ts") if ts is not None else None,
            "offline_reason": doc.get("reason")}
