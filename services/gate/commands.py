"""Commands of the ``gate`` target: present, override, mode, clear_pin_lockout, status.

They arrive through the command router, signed from central or from the
local control socket (operator = the peer's user name), and run on the
engine thread. Arguments are checked with pydantic; a bad one is a
CommandError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.commands.effects import ByArg
from edge.driver import parse_command_args
from edge.errors import CommandError
from edge.schema import EXTERNAL_ID
from services.gate.approach import Approach
from services.gate.settings import Direction, Mode

#: Effect class of each gate command (edge.commands.effects). Closing stays one person:
#: deny, lockdown, out_of_service. Granting, free passage and leaving lockdown need two.
EFFECTS = {
    "status": "observe",
    "present": "operate",  # starts a person's approach: every step of the flow still applies (see effects())
    "override": ByArg("action", {"deny": "operate"}),
    "mode": ByArg("mode", {"lockdown": "operate", "out_of_service": "operate"}),
    # ends a wrong-PIN lockout early: the card may be tried again, so fewer checks apply
    "clear_pin_lockout": "barrier",
}
#: Step kinds that check who the person is or what they carry. A flow with none of them only
#: grants, so presenting someone to it is a grant by another name.
CHECKS = frozenset({"verify", "identify", "xray", "card", "pin", "face"})


@dataclass(frozen=True)
class PresentEffect(ByArg):
    """``present`` starts the flow of its lane, direction and role (visitor with a booking, else
    any): ``operate`` when that flow checks the person before its grant, ``barrier`` when it only
    grants (e.g. ``out``/``any`` = grant) or when there is no such flow (a doubt is a barrier)."""

    lanes: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __call__(self, args: Mapping[str, Any]) -> str:
        if not isinstance(args, Mapping) or not isinstance(args.get("lane"), str):
            return "barrier"
        lane, direction = self.lanes.get(args["lane"]), args.get("direction", "in")
        role = "visitor" if args.get("booking_id") else "any"
        flow = lane.flow(direction, role) if lane is not None and isinstance(direction, str) else None
        if flow is None:
            return "barrier"
        return "operate" if any(step.kind in CHECKS for step in flow.steps) else "barrier"

    def describe(self) -> str:
        return "operate when the flow it starts checks the person; barrier when that flow only grants"


def effects(lanes: Mapping[str, Any]) -> dict[str, Any]:
    """The gate's effect classes for these lanes (``present`` depends on their flows)."""
    return {**EFFECTS, "present": PresentEffect("lane", {}, "operate", lanes)}


# What each mode asks of every lane's turnstile. Locking commands are refused by the
# driver during a fire alarm (the hardware's fail-safe wins); the refusal is recorded.
_MODE_COMMAND = {"lockdown": "lockdown", "free_passage": "unlock", "out_of_service": "lock", "normal": "lock"}


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PresentArgs(_Args):
    lane: str
    booking_id: str | None = Field(default=None, pattern=EXTERNAL_ID, description="The presented booking.")
    subject_id: str | None = Field(default=None, pattern=EXTERNAL_ID,
                                   description="Gallery subject of the booking; default: the booking id.")
    direction: Direction = "in"


class OverrideArgs(_Args):
    lane: str
    direction: Direction
    action: Literal["grant", "deny"]
    reason: str = Field(min_length=3, max_length=500, description="Why: mandatory for an override.")
    passes: int = Field(default=1, ge=1, le=255)


class ModeArgs(_Args):
    mode: Mode
    reason: str = Field(min_length=3, max_length=500)


class ClearPinLockoutArgs(_Args):
    holder: str = Field(pattern=EXTERNAL_ID, description="The directory holder's id (e.g. staff-0042).")
    reason: str = Field(min_length=3, max_length=500, description="Why the lockout may end early.")


_ARGS: dict[str, type[_Args]] = {"present": PresentArgs, "override": OverrideArgs, "mode": ModeArgs,
                                 "clear_pin_lockout": ClearPinLockoutArgs}


def _parse(model: type[_Args], name: str, args: dict[str, Any]):
    return parse_command_args(model, f"gate {name}", args)


def check(lanes, name: str, args: dict[str, Any]) -> None:
    """CommandError for a command ``run`` would refuse whatever the gate's state (an unknown
    name or lane, a bad argument): the router asks before it holds a barrier command for a
    second operator, so nobody approves an override whose reason is two letters."""
    if name == "status":
        return
    if name not in _ARGS:
        raise _unknown(name)
    lane = getattr(_parse(_ARGS[name], name, args), "lane", None)
    if lane is not None:
        _lane_named(lanes, lane)


def _who(accepted) -> str:
    if accepted.operator:
        return accepted.operator
    return "central:" + ",".join(accepted.signed_by) if accepted.signed_by else "unknown"


def run(engine, name: str, args: dict[str, Any], accepted, future: Future) -> None:
    """Run one gate command on the engine thread; resolves ``future`` (maybe later)."""
    if name == "status":
        future.set_result(engine.status() | {"approaches": [a.summary() for a in engine.approaches.values()]})
    elif name == "present":
        future.set_result(_present(engine, _parse(PresentArgs, name, args)))
    elif name == "override":
        _override(engine, _parse(OverrideArgs, name, args), accepted, future)
    elif name == "mode":
        a = _parse(ModeArgs, name, args)
        if engine.mode["mode"] == "lockdown" and a.mode == "out_of_service":
            # out_of_service is one person because it closes a gate; from lockdown it would end
            # the lockdown (every lane back to "lock", grants possible again): that is two people.
            raise CommandError("the gate is in lockdown: out_of_service would end it; leave lockdown "
                               "first with `edge gate mode normal --reason ...` (two people)")
        apply_mode(engine, a.mode, a.reason, _who(accepted), accepted.command.id, future)
    elif name == "clear_pin_lockout":
        c = _parse(ClearPinLockoutArgs, name, args)
        future.set_result(engine.perimeter.clear_pin_lockout(
            c.holder, {"operator": _who(accepted), "approved_by": accepted.approved_by, "reason": c.reason,
                       "command_id": accepted.command.id}))
    else:
        raise _unknown(name)


def _unknown(name: str) -> CommandError:
    return CommandError(f"gate has no command {name!r}; it has: {', '.join(_ARGS)}, status")


def _lane_named(lanes, name: str):
    if name not in lanes:
        raise CommandError(f"no gate lane named {name!r}; lanes: {', '.join(lanes) or 'none'}")
    return lanes[name]


def _present(engine, a: PresentArgs) -> dict[str, Any]:
    lane = _lane_named(engine.lanes, a.lane)
    role = "visitor" if a.booking_id else "any"
    flow = lane.flow(a.direction, role)
    if flow is None:
        have = ", ".join(f"{f.direction}/{f.role}" for f in lane.flows)
        raise CommandError(f"lane {a.lane} has no flow for {a.direction}/{role} (it has: {have}); "
                           + ("present a booking" if role == "any" else "add the flow to [gate.lanes]"))
    busy = engine.approaches.get(a.lane)
    if busy is not None:
        raise CommandError(f"lane {a.lane} is busy with approach {busy.id} ({busy.state}, step "
                           f"{busy.step.kind if busy.step else '-'}); wait, or decide it with `edge gate override`")
    ap = engine.begin(Approach(a.lane, a.direction, role, flow, subject=a.subject_id or a.booking_id,
                               booking_id=a.booking_id, started_by="present"))
    decided = engine.approaches.get(a.lane) is not ap
    return {"approach_id": ap.id, "lane": a.lane, "state": "decided" if decided else ap.state,
            "decision": engine.last_decision if decided else None}


def _override(engine, a: OverrideArgs, accepted, future: Future) -> None:
    _lane_named(engine.lanes, a.lane)
    override = {"operator": _who(accepted), "reason": a.reason, "origin": accepted.origin,
                "command_id": accepted.command.id}
    ap = engine.approaches.get(a.lane)
    if ap is not None and ap.direction != a.direction:
        raise CommandError(f"lane {a.lane} has an approach going {ap.direction!r} ({ap.id}); "
                           f"override it with --dir {ap.direction}")
    if a.action == "deny":
        if ap is None:
            ap = Approach(a.lane, a.direction, "officer", None, started_by="override")
        engine.decide(ap, "deny", "officer_override", a.reason, override=override)
        if a.lane in engine.passing:  # a grant is open at the lane: withdraw it
            engine.send(engine.lanes[a.lane].turnstile, "deny", engine.address(a.lane), "officer withdrew the grant",
                        lambda r: None)
            engine.passed(a.lane, None, f"grant withdrawn by {override['operator']}: {a.reason}")
        future.set_result(engine.last_decision)
        return
    if engine.mode["mode"] == "lockdown":
        raise CommandError("the gate is in lockdown: no grants at all; leave lockdown first "
                           "(edge gate mode normal --reason ...)")
    if ap is not None and ap.state == "granting":
        raise CommandError(f"lane {a.lane} is already opening for approach {ap.id}")
    if ap is None:
        ap = Approach(a.lane, a.direction, "officer", None, started_by="override")
        engine.approaches[a.lane] = ap
    timeout = _grant_timeout(engine, a.lane, a.direction)
    engine.grant(ap, a.passes, timeout, override=override, future=future)


def _grant_timeout(engine, lane_name: str, direction: str) -> int:
    for flow in engine.lanes[lane_name].flows:
        if flow.direction == direction:
            return int(flow.steps[-1].timeout_s)
    return 10


def apply_mode(engine, mode: str, reason: str | None, set_by: str, command_id: str | None = None,
               future: Future | None = None) -> None:
    """Persist the mode, close approaches it forbids, and set every lane's turnstile accordingly."""
    previous = engine.mode["mode"]
    if set_by != "restart":
        engine.state.set_mode(mode, set_by, reason)
        engine.mode = {"mode": mode, "set_by": set_by, "reason": reason}
    if mode in ("lockdown", "out_of_service"):
        for ap in list(engine.approaches.values()):
            engine.decide(ap, "deny", mode, f"the gate went into {mode}: {reason}")
    results: dict[str, Any] = {}
    lanes = list(engine.lanes)
    command = "release" if previous == "lockdown" and mode == "normal" else _MODE_COMMAND[mode]

    def collect(lane: str, result: dict[str, Any]) -> None:
        results[lane] = {"command": command, "status": result.get("status"), "detail": result.get("detail"),
                         "emergency": engine.emergency.get(lane, False)}
        if len(results) == len(lanes):
            body = {"mode": mode, "previous": previous, "set_by": set_by, "reason": reason,
                    "command_id": command_id, "online": engine.online, "lanes": results}
            engine.emit("gate.mode", body, "alarm" if mode == "lockdown" else "normal")
            if future is not None and not future.done():
                future.set_result(body)

    for lane in lanes:
        engine.send(engine.lanes[lane].turnstile, command, engine.address(lane), f"gate mode {mode}",
                    lambda r, lane=lane: collect(lane, r))
