"""Local two-person rule: a barrier or erase command from the control socket waits for a second operator.

Operator A asks (``edge cmd local gate mode --arg mode=free_passage …``): the
daemon holds the request and answers ``under_signed`` with an approval id.
Operator B, logged in under *another* account (the socket tells the daemon
who is at the other end, SO_PEERCRED), runs ``edge cmd approve ID``: the
command then runs once, recorded with both names. Requests are held in memory
for ``commands.local_approval_s``; a restart forgets them (ask again).

The one exception a site may switch on, ``allow_single_person_override``:
one operator may let ONE person through (``passes = 1``, a reason), and every
use is an alarm event to central. Never a mode change, never more passages.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: (target kind of command, name) pairs that grant one passage: only these may be single-person.
SINGLE_PASSAGE = {"override": ("action", "grant"), "grant": (None, None)}
_MAX_PENDING = 64


@dataclass
class Pending:
    """A local barrier/erase request waiting for its second operator."""

    id: str
    request: dict[str, Any]
    operator: str
    created: float

    def summary(self, now: float, hold_s: float) -> dict[str, Any]:
        """What the second operator sees: the arguments as a log would show them, so a held
        staff enrolment lists its subject and template count, never the templates; and how
        long the request still waits."""
        from edge.logs import scrubbed

        r = self.request
        return {"approval_id": self.id, "target": r.get("target"), "name": r.get("name"),
                "args": scrubbed(r.get("args") or {}), "reason": r.get("reason"), "requested_by": self.operator,
                "age_s": round(now - self.created, 1),
                "expires_in_s": round(max(0.0, self.created + hold_s - now), 1)}


class Approvals:
    """Requests waiting for a second operator; owned by the router's worker thread."""

    def __init__(self, hold_s: float, clock=time.monotonic):
        self.hold_s, self._clock = hold_s, clock
        self._pending: dict[str, Pending] = {}

    def hold(self, request: Mapping[str, Any], operator: str) -> Pending:
        self._expire()
        while len(self._pending) >= _MAX_PENDING:
            self._pending.pop(next(iter(self._pending)))
        pid = f"approve-{secrets.token_hex(4)}"
        held = {k: request.get(k) for k in ("target", "name", "args", "reason")}
        pending = Pending(pid, held, operator, self._clock())
        self._pending[pid] = pending
        return pending

    def take(self, pid: Any, operator: str) -> tuple[Pending | None, str]:
        """(the request, "") when ``operator`` may approve it now, else (the request if it waits,
        or None; why not). A refused request stays held."""
        self._expire()
        pending = self._pending.get(pid) if isinstance(pid, str) else None
        if pending is None:
            return None, (f"no pending request {pid!r}: mistyped, expired after {self.hold_s:g}s, already "
                          "approved, or the daemon restarted; `edge cmd pending` lists what waits; if it is "
                          "not there, the first operator asks again")
        if pending.operator == operator:
            return pending, (f"{operator} asked for {pid}; the approval must come from a second operator "
                             "logged in under another account")
        del self._pending[pid]
        return pending, ""

    def listing(self) -> list[dict[str, Any]]:
        self._expire()
        now = self._clock()
        return [p.summary(now, self.hold_s) for p in self._pending.values()]

    def _expire(self) -> None:
        now = self._clock()
        for pid in [p.id for p in self._pending.values() if now - p.created > self.hold_s]:
            del self._pending[pid]


def single_passage_problem(name: str, args: Mapping[str, Any], reason: Any) -> str | None:
    """None when this command lets exactly one person through with a reason; else what is wrong."""
    if name not in SINGLE_PASSAGE:
        return (f"{name!r} is not a single passage; a one-person override is only "
                "`gate override --action grant --passes 1` or a turnstile `grant` with passes = 1")
    arg, value = SINGLE_PASSAGE[name]
    if arg is not None and args.get(arg) != value:
        return f"a one-person override must be {arg}={value}"
    if args.get("passes", 1) != 1:
        return f"a one-person override lets exactly one person through (passes = 1), not {args.get('passes')!r}"
    why = args.get("reason") if name == "override" else reason
    if not isinstance(why, str) or len(why.strip()) < 3:
        why = reason
    if not isinstance(why, str) or len(why.strip()) < 3:
        return "a one-person override needs a reason (--reason, at least 3 characters)"
    return None
