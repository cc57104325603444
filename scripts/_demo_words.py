"""The demo's live view: what central receives, the gate's decisions in words."""

from __future__ import annotations

import json

_REASONS = {
    "flow_complete": "every step passed", "face_not_verified": "the face does not match the booking",
    "dose_limit": "the x-ray dose limit is reached", "scan_not_clear": "the scan was not clear",
    "step_timeout": "a step waited too long", "officer_override": "an officer decided",
    "liveness_failed": "the face did not look alive", "multiple_faces": "more than one person in the lane",
}
_OUTCOMES = {"grant": "LET THROUGH", "deny": "DENIED", "hold": "HELD for an officer"}
_QUIET = ("system.heartbeat", "command.result", "turnstile.status", "turnstile.online")


def describe(topic: str, payload: bytes) -> list[str]:
    """One line per event: gate, face, x-ray, turnstile and tablet events in words; others short."""
    short = topic.removeprefix("edge/v1/")
    if "/events/" in topic or topic.endswith("/cmd/result"):
        try:
            events = json.loads(payload)["events"]
        except (ValueError, KeyError):
            return [f"  {short}  <{len(payload)} bytes, not an event batch>"]
        return [line for e in events if (line := _event(e))]
    if "/learning/" in topic or "/msg/" in topic or topic.endswith("/state"):
        return []  # content chunks, requests, signed documents, presence: shown by their effects
    return [f"  {short}  <{len(payload)} bytes>"]


def _event(e: dict) -> str | None:
    p, kind = e["payload"], e["type"]
    words = _WORDS.get(kind)
    if words:
        return f"  {e['device']:<13} {words(p)}"
    if kind.startswith(_QUIET):
        return None
    return f"  {e['device']:<13} {kind:<24} {json.dumps(p, separators=(',', ':'))[:80]}"


def _decision(p: dict) -> str:
    who = f"{p['role']} {p['subject'] or ''}".strip()
    booking = f" (booking {p['booking_id']})" if p.get("booking_id") else ""
    steps = ", ".join(f"{s['kind']} {s['result']}" for s in p["steps"]) or "no steps"
    why = _REASONS.get(p["reason"], p["reason"])
    return (f"GATE {p['lane']} {p['direction']}: {who}{booking} {_OUTCOMES[p['outcome']]}: {why} "
            f"[{steps}]{'' if p['online'] else ' (offline)'}")


def _passage(p: dict) -> str:
    went = "went through the turnstile" if p["passed"] else "did NOT go through"
    return f"GATE {p['lane']} {p['direction']}: the person {went}"


def _dose(p: dict) -> str:
    ok = "may be scanned" if p["allowed"] else "must NOT be scanned"
    return (f"dose check: {p['subject']} {ok} ({p['total_usv']:g} of {p['limit_usv']:g} µSv used "
            f"in the window)")


def _face(p: dict) -> str:
    verb = "matches" if "reason" not in p else f"does NOT match ({p['reason']})"
    dist = f"distance {p['distance']:.2f}" if p.get("distance") is not None else "no distance"
    return f"camera: the face {verb} booking {p.get('booking_id')} of {p['subject_id']} " \
           f"({dist}, threshold {p['threshold']:.2f})"


_WORDS = {
    "gate.decision": _decision,
    "gate.passage": _passage,
    "gate.dose_check": _dose,
    "biometric.verified": _face,
    "biometric.verify_failed": _face,
    "xray.scan": lambda p: f"x-ray: scan {p['scan_id']} of {p['subject']}: {p['outcome']}, "
                           f"operator decided {p['decision']} ({p['dose_usv']:g} µSv)",
    "turnstile.granted": lambda p: f"turnstile: open {p['direction']} for {p['passes']} "
                                   f"(closes after {p['timeout_s']} s)",
    "turnstile.passage": lambda p: f"turnstile: one person passed {p['direction']} (counter {p['counter']})",
    "message.out": lambda p: f"tablet: message {p['message_id'][:8]} sent to central, sealed "
                             "(only central's moderators can open it)",
    "gate.mode": lambda p: f"GATE mode {p['mode']} (was {p['previous']}), set by {p['set_by']}",
}
