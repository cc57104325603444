"""``edge gate …``: the officer's and supervisor's view of the gate policy.

Everything goes through the daemon's control socket to its ``gate`` target,
so it is recorded (``command.result`` with your user name, and a
``gate.decision`` or ``gate.mode`` event) exactly like a command from central.
"""

from __future__ import annotations

from typing import Any

import click

from edge.cli._common import (
    EX_UNAVAILABLE,
    edge_errors,
    exit_if_held,
    fail,
    json_option,
    output,
    settings_from,
)

_dir = click.option("--dir", "direction", type=click.Choice(["in", "out"]), default="in", show_default=True,
                    help="Direction of the passage.")


@click.group()
def gate() -> None:
    """Gate policy: mode, approaches in progress, officer overrides."""


def _send(ctx: click.Context, name: str, args: dict[str, Any], reason: str | None, as_json: bool,
          single_person: bool = False) -> dict:
    from edge.commands.local import ControlUnavailable, send

    settings = settings_from(ctx)
    if not settings.gate.lanes:
        fail("no [gate.lanes] in the config: this device has no gate policy", as_json=as_json)
    try:
        reply = send(settings.state_dir, "gate", name, args, reason, single_person=single_person)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    exit_if_held(reply, as_json)  # an override or a mode that opens: held for a second operator
    if reply.get("status") != "ok":
        fail(f"gate {name}: {reply.get('status')}: {reply.get('detail') or reply.get('reason')}",
             as_json=as_json, result=reply)
    return reply["result"]


def _decision_text(d: dict[str, Any]) -> str:
    who = f" by {d['override']['operator']}" if d.get("override") else ""
    steps = ", ".join(f"{s['kind']}:{s['result']}" for s in d.get("steps", [])) or "no steps"
    return (f"{d['lane']} {d['direction']}: {d['outcome'].upper()}{who} ({d['reason']}: {d['detail']}) "
            f"[{steps}] mode {d['mode']}, {'online' if d['online'] else 'offline'}")


@gate.command("status")
@json_option
@click.pass_context
@edge_errors
def status(ctx, as_json) -> None:
    """Mode, lanes and the approaches in progress."""
    result = _send(ctx, "status", {}, None, as_json)

    def text(r: dict[str, Any]) -> str:
        lines = [f"mode: {r['mode']} (set by {r.get('mode_set_by')}: {r.get('mode_reason') or '-'}), "
                 f"{'online' if r['online'] else 'offline'}"]
        for name, lane in r["lanes"].items():
            ap = lane["approach"]
            now = (f"{ap['role']} {ap['subject'] or ''} {ap['direction']}: {ap['state']} at {ap['step']}"
                   if ap else "idle")
            lines.append(f"  {name}: {now}{'  FIRE ALARM FREE SWING' if lane['emergency'] else ''}")
        lines += _lockout_lines(r.get("pin_lockouts") or [])
        return "\n".join(lines)
    output(result, as_json, text)


def _lockout_lines(lockouts: list[dict[str, Any]]) -> list[str]:
    """Each card locked out after wrong PINs: until when, and how two people end it early."""
    from edge.cli._common import duration

    lines = []
    for x in lockouts:
        until = f"until {x['until'][11:19]} UTC, " if x.get("until") else ""
        wrong = f", after {x['wrong_pins']} wrong PINs" if x.get("wrong_pins") else ""
        lines.append(f"  PIN LOCKED: {x['holder']} ({until}{duration(x['remaining_s'])} left{wrong}); every lane "
                     f"denies the card. To end it early: edge gate clear-pin-lockout {x['holder']} --reason TEXT")
    if lockouts:
        lines.append("    (two people: it prints an approval id; a second operator, under their own account, "
                     "then runs edge cmd approve ID)")
    return lines


@gate.command("present")
@click.argument("lane")
@click.option("--booking", "booking_id", help="Booking id presented (card, QR code, desk).")
@click.option("--subject", "subject_id", help="Gallery subject of the booking (default: the booking id).")
@_dir
@json_option
@click.pass_context
@edge_errors
def present(ctx, lane, booking_id, subject_id, direction, as_json) -> None:
    """Start an approach at LANE: a visitor shows a booking, the camera then verifies the face."""
    args = {"lane": lane, "direction": direction, "booking_id": booking_id, "subject_id": subject_id}
    result = _send(ctx, "present", {k: v for k, v in args.items() if v is not None}, None, as_json)
    output(result, as_json, lambda r: _decision_text(r["decision"]) if r.get("decision")
           else f"{lane}: approach {r['approach_id']} started; follow it with `edge gate status`")


@gate.command("override")
@click.argument("lane")
@click.option("--grant", is_flag=True, help="Let the person through now.")
@click.option("--deny", is_flag=True, help="Refuse: end the approach.")
@_dir
@click.option("--passes", type=click.IntRange(1, 255), default=1, show_default=True)
@click.option("--reason", required=True, help="Why (mandatory; recorded with your user name).")
@click.option("--single-person", is_flag=True,
              help="One passage without a second operator, where the site allows it (raises an alarm).")
@json_option
@click.pass_context
@edge_errors
def override(ctx, lane, grant, deny, direction, passes, reason, single_person, as_json) -> None:
    """An officer decides at LANE: grant or deny, with a reason.

    A grant needs a second operator: it prints an approval id for `edge cmd approve`.
    """
    if grant == deny:  # neither, or both: never guess which one the officer meant
        fail("say either --grant or --deny (exactly one)", 2, as_json=as_json)
    action = "grant" if grant else "deny"
    args = {"lane": lane, "direction": direction, "action": action, "reason": reason, "passes": passes}
    output(_send(ctx, "override", args, reason, as_json, single_person), as_json, _decision_text)


@gate.command("mode")
@click.argument("mode", type=click.Choice(["normal", "lockdown", "free_passage", "out_of_service"]))
@click.option("--reason", required=True, help="Why (mandatory; recorded with your user name).")
@json_option
@click.pass_context
@edge_errors
def mode(ctx, mode, reason, as_json) -> None:
    """Set the gate's mode: normal, lockdown, free_passage or out_of_service."""
    result = _send(ctx, "mode", {"mode": mode, "reason": reason}, reason, as_json)

    def text(r: dict[str, Any]) -> str:
        lanes = ", ".join(f"{n}: {v['command']} {v['status']}" + (f" ({v['detail']})" if v["detail"] else "")
                          for n, v in r["lanes"].items())
        return f"mode {r['mode']} (was {r['previous']}); {lanes}"
    output(result, as_json, text)


@gate.command("clear-pin-lockout")
@click.argument("holder")
@click.option("--reason", required=True, help="Why the card may be tried again now (recorded with your user name).")
@json_option
@click.pass_context
@edge_errors
def clear_pin_lockout(ctx, holder, reason, as_json) -> None:
    """End HOLDER's wrong-PIN lockout (and count) at this gate early.

    A barrier command: it prints an approval id for a second operator's `edge cmd approve`.
    Otherwise a lockout simply ends after [gate].pin_lockout_s.
    """
    gate_now = _send(ctx, "status", {}, None, as_json)
    locked = [x["holder"] for x in gate_now.get("pin_lockouts") or []]
    counted = gate_now.get("wrong_pin_counts")
    if counted is not None and holder not in counted and holder not in locked:  # nothing a second person could clear
        fail(f"{holder} is not locked out at this gate and has no wrong PINs counted: nothing to clear "
             f"(locked out now: {', '.join(locked) or 'none'}; the holder id is the one in the gate.pin_lockout "
             f"alarm and in `edge gate status`)", as_json=as_json)
    result = _send(ctx, "clear_pin_lockout", {"holder": holder, "reason": reason}, reason, as_json)
    output(result, as_json, lambda r: f"{r['holder']}: {r['detail']}")


@gate.command("count")
@json_option
@click.pass_context
@edge_errors
def count(ctx, as_json) -> None:
    """Roll-call: people per zone and who is where, from this device's own files.

    Works with the daemon stopped and the network down (an evacuation): it
    reads the occupancy ledger and the event store directly.
    """
    from edge.errors import StoreError
    from services.gate.occupancy import Occupancy

    settings = settings_from(ctx)
    if not settings.gate.zones:
        fail("no [gate].zones in the config: this gate counts nobody", as_json=as_json)
    try:
        occupancy = Occupancy(settings.state_dir, readonly=True)
        occupancy.catch_up()
    except StoreError as exc:
        fail(f"cannot read the occupancy ledger: {exc}", as_json=as_json)
    result = occupancy.count(settings.gate.zones)

    def text(r: dict[str, Any]) -> str:
        lines = [f"{zone}: {n}" for zone, n in r["zones"].items()]
        for zone in r["zones"]:
            people = [p for p in r["people"] if p["zone"] == zone]
            if people and zone != settings.gate.zones[0]:
                lines.append(f"in {zone}:")
                lines += [f"  {p['person']} ({p['role']}) since {p['since']} via {p['lane']}" for p in people]
        return "\n".join(lines)
    output(result, as_json, text)
