"""What the driver knows about each controller, and how device messages become edge events.

Both codecs end here: a ``DeviceEvent``, ``Status`` or ``Counters`` from any
wire format maps to the one ``turnstile.*`` vocabulary. Counter gaps are found
two ways: a passage whose counter jumps by more than one (the device's event
queue overflowed), and the counters read after a reconnect (passages the device
counted while nobody could hear it). Tamper events go through ``ChangeFold``: a
flapping switch, or a controller reporting garbage, is a few alarms and one
``turnstile.flood``, not an alarm per event (each is still taken and confirmed).
Forced passages go through a fold of their own (``what: forced``): the first of a
burst is alarmed at once, whatever the tamper switch does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.turnstile import messages as m
from drivers.turnstile._commands import mode_note
from edge.ratelimit import ChangeFold

K = m.EventKind
EVENT_TYPES = {
    K.PASSAGE: "turnstile.passage", K.GRANT_TIMEOUT: "turnstile.grant_timeout",
    K.FORCED: "turnstile.forced", K.TAILGATE: "turnstile.tailgate",
    K.WRONG_WAY: "turnstile.wrong_way", K.HELD_OPEN: "turnstile.held_open",
    K.TAMPER: "turnstile.tamper", K.EMERGENCY: "turnstile.emergency", K.FAULT: "turnstile.fault",
}
ALARMS = frozenset({K.FORCED, K.TAILGATE, K.WRONG_WAY, K.TAMPER, K.EMERGENCY})

Emit = Callable[[str, dict, str], object]


@dataclass
class DeviceState:
    address: int
    online: bool | None = None          # None: not contacted yet
    last_seq: int = 0                   # last device event seq taken (and stored)
    counters: dict[str, int] | None = None  # passage counters as last known
    emergency: bool = False
    rtt_ms: float | None = None
    status: m.Status | None = None
    offline_reason: str | None = None
    events: int = 0
    duplicates: int = 0
    refused: int = 0  # well-framed events that cannot be true (see _impossible)
    gaps: int = 0
    flood_report_s: float = 60.0
    tamper: ChangeFold = field(init=False, repr=False)
    forced: ChangeFold = field(init=False, repr=False)

    def __post_init__(self):
        self._emit: Emit | None = None  # the emit of the call in progress (the fold's alarms go there)
        self._tamper_payload: dict = {}  # the last tamper event's, for the state a flood leaves
        self._forced_payload: dict = {}  # the forced event's being folded (key: its direction)
        self.tamper = ChangeFold(self.flood_report_s, self._tamper_alarm,
                                 self._report("status_changes", "tamper changes"), initial={"tamper": False})
        self.forced = ChangeFold(self.flood_report_s, self._forced_alarm, self._report("forced", "forced passages"))

    def set_online(self, online: bool, emit: Emit, reason: str | None = None) -> None:
        """Record a change of reachability (only changes make an event)."""
        if online == self.online:
            return
        self.online = online
        self.offline_reason = None if online else reason
        payload = {"address": self.address}
        if online:
            emit("turnstile.online", payload, "normal")
        else:
            emit("turnstile.offline", {**payload, "reason": reason}, "normal")

    def on_event(self, ev: m.DeviceEvent, emit: Emit) -> bool:
        """Turn one device event into edge events; False when it is a retransmission or refused.

        A well-framed event that cannot be true (seq 0, a passage without a direction)
        is refused with an alarm, never raised: the caller confirms it all the same, so a
        controller does not resend it forever in front of every later event.
        """
        problem = _impossible(ev)
        if problem is not None:
            self.refused += 1
            emit("turnstile.event_refused", {"address": self.address, "device_seq": ev.seq,
                                             "kind": ev.kind.name.lower(), "reason": problem}, "alarm")
            return False
        if ev.seq == self.last_seq:
            self.duplicates += 1
            return False
        payload = {"address": self.address, "device_seq": ev.seq, "device_time": ev.device_time}
        if ev.direction:
            payload["direction"] = ev.direction
        if ev.kind == K.PASSAGE:
            self._passage_gap(ev, emit)
            payload["counter"] = ev.counter
        elif ev.kind in (K.TAMPER, K.EMERGENCY):
            payload["active"] = bool(ev.arg)
        elif ev.kind == K.FAULT:
            payload["code"] = ev.arg
        if ev.kind == K.EMERGENCY:
            self._emergency(bool(ev.arg), emit, payload)
        elif ev.kind == K.TAMPER:
            self._emit, self._tamper_payload = emit, payload
            self.tamper.changed("tamper", payload["active"])
        elif ev.kind == K.FORCED:
            self._emit, self._forced_payload[ev.direction] = emit, payload
            self.forced.changed(ev.direction, True)
        else:
            emit(EVENT_TYPES[ev.kind], payload, "alarm" if ev.kind in ALARMS else "normal")
        self.last_seq = ev.seq
        self.events += 1
        return True

    def on_status(self, status: m.Status, emit: Emit) -> None:
        self.status = status
        self._emit = emit
        self.tamper.tick()  # each poll (bus) or heartbeat (point to point): the floods' reports
        self.forced.tick()
        if status.emergency != self.emergency:
            # The event itself was lost (queue overflow, offline): the flag still tells us.
            self._emergency(status.emergency, emit, {"address": self.address, "active": status.emergency,
                                                     "detected_by": "status"})

    def on_counters(self, counters: m.Counters, emit: Emit, *, report_gap: bool) -> dict[str, int]:
        """Counters read from the device; after a reconnect, passages we never heard are a gap."""
        now = {"in": counters.inbound, "out": counters.outbound}
        if report_gap and self.counters is not None:
            for direction, value in now.items():
                delta = value - self.counters[direction]
                if delta > 0:
                    self._gap(direction, self.counters[direction], value, delta, "missed_while_offline", emit)
        self.counters = now
        return now

    def on_counters_read(self, counters: m.Counters) -> None:
        """An operator's read: the controller's counters are the truth. Only forward: a passage
        event still on the line must not move them back (and a gap is the resync's to report)."""
        if self.counters is not None:
            self.counters = {"in": max(self.counters["in"], counters.inbound),
                             "out": max(self.counters["out"], counters.outbound)}

    def _passage_gap(self, ev: m.DeviceEvent, emit: Emit) -> None:
        if self.counters is None:
            return  # no baseline yet: the counters read on first contact sets it
        last = self.counters[ev.direction]
        if ev.counter > last + 1:
            self._gap(ev.direction, last, ev.counter - 1, ev.counter - last - 1, "device_queue_overflow", emit)
        # max: a late retransmission must not move our idea of the counter backwards
        self.counters[ev.direction] = max(last, ev.counter)

    def _gap(self, direction, last, now, delta, reason, emit: Emit) -> None:
        self.gaps += 1
        emit("turnstile.counter_gap", {"address": self.address, "direction": direction, "delta": delta,
                                       "last_counter": last, "counter": now, "reason": reason}, "normal")

    def _tamper_alarm(self, _key: str, active: bool) -> None:
        self._emit("turnstile.tamper", {**self._tamper_payload, "active": active}, "alarm")

    def _forced_alarm(self, direction: str | None, _active: bool) -> None:
        self._emit("turnstile.forced", self._forced_payload[direction], "alarm")

    def _report(self, what: str, changes: str):
        def report(state: str, suppressed: int, total: int, duration_s: float) -> None:
            fold = self.tamper if what == "status_changes" else self.forced
            payload = fold.payload(state, suppressed, total, duration_s, changes)
            self._emit("turnstile.flood", {"address": self.address, "what": what, **payload},
                       "alarm" if state == "started" else "normal")
        return report

    def _emergency(self, active: bool, emit: Emit, payload: dict) -> None:
        if active == self.emergency:
            return
        self.emergency = active
        emit("turnstile.emergency", payload, "alarm")

    def health(self) -> dict:
        h = {"online": self.online, "rtt_ms": self.rtt_ms,
             "counters": dict(self.counters) if self.counters else None,
             "emergency": self.emergency, "events": self.events, "counter_gaps": self.gaps,
             "events_refused": self.refused, "tamper_flapping": self.tamper.active,
             "tamper_changes_suppressed": self.tamper.suppressed, "forced_flooding": self.forced.active,
             "forced_suppressed": self.forced.suppressed}
        if self.offline_reason:
            h["offline_reason"] = self.offline_reason
        if self.status is not None:
            h["mode"] = self.status.mode.name.lower()
        return h


def lane_mode(devices: dict[int, DeviceState], lane: str) -> dict[str, str]:
    """The controllers' mode for the driver's health (``mode``; on a bus, each address's when
    they differ) and, in lockdown or free passage, what ends it (``mode_note``)."""
    modes = {a: d.status.mode.name.lower() for a, d in devices.items() if d.status is not None}
    if not modes:
        return {}
    kinds = set(modes.values())
    out = {"mode": kinds.pop() if len(kinds) == 1 else ", ".join(f"{a} {m}" for a, m in modes.items())}
    unusual = [m for m in ("lockdown", "free") if m in modes.values()]
    if unusual and (note := mode_note(unusual[0], lane)):
        out["mode_note"] = note
    return out


def _impossible(ev: m.DeviceEvent) -> str | None:
    if ev.seq == 0:
        return "event number 0 (a controller numbers its events from 1)"
    if ev.kind == K.PASSAGE and ev.direction is None:
        return "a passage without a direction cannot be counted"
    return None
