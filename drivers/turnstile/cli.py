"""``edge turnstile …``: an engineer on site opens, closes and reads a lane through the daemon.

Every action goes through the daemon's control socket, so the driver that owns
the serial port or the Modbus module does it, and the daemon records it as
``command.result`` with your user name.
"""

from __future__ import annotations

from typing import Any

import click

from edge.cli._common import (
    EX_UNAVAILABLE,
    edge_errors,
    exit_if_held,
    fail,
    human_age,
    json_option,
    light_settings,
    output,
    settings_from,
)

# Both speak the same commands (drivers/io uses the serial turnstile's vocabulary and effects).
KINDS = ("turnstile.serial", "turnstile.modbus")
_address = click.option("--address", type=click.IntRange(1, 32), help="Bus address (rs485-bus); default the first.")
_reason = click.option("--reason", help="Why, for the audit trail (recorded with your user name).")


@click.group()
def turnstile() -> None:
    """Grant passage, lock, unlock and read counters of a turnstile (serial or Modbus)."""


def send_to_driver(ctx: click.Context, name: str, command: str, args: dict[str, Any], reason: str | None,
                   as_json: bool, kinds: tuple[str, ...] | None = KINDS) -> dict[str, Any]:
    """Send one command to the running daemon's driver ``name``; exits non-zero unless it succeeded."""
    from edge.commands.local import ControlUnavailable, send

    settings = settings_from(ctx)
    configured = {d.name: d.kind for d in settings.drivers}
    if name not in configured:
        fail(f"no driver named {name!r} in the config; configured: {', '.join(configured) or 'none'}",
             as_json=as_json)
    if kinds and configured[name] not in kinds:
        fail(_not_a_turnstile(name, configured[name]), as_json=as_json)
    try:
        reply = send(settings.state_dir, name, command, args, reason)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    exit_if_held(reply, as_json)  # grant, unlock, release: held for a second operator
    if reply.get("status") != "ok":
        fail(f"{name} {command}: {reply.get('status')}: {reply.get('detail') or reply.get('reason')}",
             as_json=as_json, result=reply)
    return reply


@turnstile.command("grant")
@click.argument("name")
@click.option("--dir", "direction", type=click.Choice(["in", "out"]), required=True, help="Direction to open.")
@click.option("--passes", type=click.IntRange(1, 255), default=1, show_default=True)
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 255), default=10, show_default=True,
              help="Seconds the lane stays open if nobody passes.")
@_address
@_reason
@json_option
@click.pass_context
@edge_errors
def grant(ctx, name, direction, passes, timeout_s, address, reason, as_json) -> None:
    """Open lane NAME for PASSES people in one direction (the controller must ACK)."""
    args = {"direction": direction, "passes": passes, "timeout_s": timeout_s}
    if address:
        args["address"] = address
    reply = send_to_driver(ctx, name, "grant", args, reason, as_json)
    output(reply, as_json, lambda r: f"{name}: granted {passes} x {direction} for {timeout_s}s "
                                     f"(ACK in {r['result'].get('rtt_ms')} ms)")


@turnstile.command("counters")
@click.argument("name")
@_address
@json_option
@click.pass_context
@edge_errors
def counters(ctx, name, address, as_json) -> None:
    """Read the controller's passage counters."""
    reply = send_to_driver(ctx, name, "read_counters", {"address": address} if address else {}, None, as_json)
    c = reply["result"]["counters"]
    output(reply, as_json, f"{name}: in {c['in']}, out {c['out']}")


def _simple(command: str, help_text: str):
    @click.argument("name")
    @_address
    @_reason
    @json_option
    @click.pass_context
    @edge_errors
    def run(ctx, name, address, reason, as_json) -> None:
        reply = send_to_driver(ctx, name, command, {"address": address} if address else {}, reason, as_json)
        output(reply, as_json, f"{name}: {command} acknowledged by the controller{_mode_now(reply)}"
                               f"{_still_locked_down(name, command, reply)}")

    run.__doc__ = help_text
    return turnstile.command(command)(run)


def _mode_now(reply: dict[str, Any]) -> str:
    # `lock` leaves a lane in lockdown (one person cannot end one): say what the lane is now.
    result = reply.get("result") or {}
    mode = result.get("mode") or (result.get("status") or {}).get("mode")
    return f"; mode now {mode}" if mode else ""


def _still_locked_down(name: str, command: str, reply: dict[str, Any]) -> str:
    """One person's `lock` leaves a lockdown as it is: say so, and what ends it, rather than let
    "lock acknowledged" read as a lane back to normal."""
    if command != "lock" or not _mode_now(reply).endswith("lockdown"):
        return ""
    return (f"\n  the lane stays in lockdown (lock does not end one): `edge turnstile release {name}` does, "
            "and needs a second person's approval; a gate-wide lockdown (`edge gate status`) ends with "
            "`edge gate mode normal --reason TEXT`")


for _cmd, _help in [("deny", "Cancel a pending grant."), ("lock", "Back to normal: closed, opens on a grant."),
                    ("unlock", "Free passage both ways (no grant needed)."),
                    ("lockdown", "Closed; grants refused until release."),
                    ("release", "Leave lockdown: back to normal.")]:
    _simple(_cmd, _help)


@turnstile.command("status")
@click.argument("name")
@json_option
@click.pass_context
@edge_errors
def status(ctx, name, as_json) -> None:
    """What the daemon last knew about lane NAME, with what to check next (no device traffic)."""
    from edge.cli._state import live_status, read_status

    settings = light_settings(ctx)
    # the daemon's memory first: an operator (group edge) may ask it but not read its status file
    state = live_status(settings.state_dir) or read_status(settings.state_dir)
    if state is None:
        fail(f"no status file in {settings.state_dir}: has `edge run` started on this device?",
             EX_UNAVAILABLE, as_json=as_json)
    health = state.get("drivers", {}).get(name)
    if health is None:
        fail(f"no driver named {name!r} in the daemon's status; configured: "
             f"{', '.join(state.get('drivers', {})) or 'none'}", as_json=as_json)
    if health.get("kind", KINDS[0]) not in KINDS:
        fail(_not_a_turnstile(name, health["kind"]), as_json=as_json)
    from edge.cli._views import figures_age_s

    running = bool(state.get("running"))
    data = {"driver": name, "daemon_running": running, "updated_at": state.get("updated_at"),
            "figures_age_s": figures_age_s(state), **health, "advice": advice(health, running, name)}
    output(data, as_json, _status_text)


def _not_a_turnstile(name: str, kind: str) -> str:
    return (f"driver {name!r} is a {kind}, not a turnstile ({' or '.join(KINDS)}); "
            f"`edge cmd local {name} NAME` sends it a command of its own")


def advice(h: dict[str, Any], daemon_running: bool = True, name: str = "NAME") -> list[str]:
    """What a field engineer should check, from a turnstile driver's health."""
    if not daemon_running:  # every driver reads 'stopped' then: the daemon is what to look at
        return ["the daemon is not running: start it (systemctl start edge); if it stopped by itself, "
                "`journalctl -u edge` says why"]
    out = _module_advice(h, name) if h.get("kind") == "turnstile.modbus" else []
    if h.get("port_error"):
        out.append(f"serial port {h.get('port')} unavailable ({h['port_error']}): check the USB adapter "
                   "and cable; `ls -l /dev/serial/by-id/`; is another program holding the port?")
    for address, dev in (h.get("devices") or {}).items():
        if dev.get("online") is False and not h.get("port_error"):
            out.append(f"controller at address {address} does not answer ({dev.get('offline_reason')}): "
                       f"check its power, the A/B wiring, its bus address and baud rate ({h.get('baudrate')})")
        if dev.get("emergency"):
            out.append(f"address {address}: fire-alarm free swing active; lock is refused until it clears")
        if dev.get("mode") == "lockdown":
            out.append(f"address {address}: {_lockdown(name)}")
    line = h.get("line") or {}
    bad = line.get("bad_checksum", 0) + line.get("malformed", 0)
    if bad > max(10, line.get("frames", 0) // 100):
        out.append(f"{bad} damaged frames on the line: check termination (120 ohm at both ends), "
                   "shield grounding and that both sides use the same baud rate")
    if h.get("status") == "stopped" or h.get("last_error"):
        out.append("the driver is not running normally: `edge events tail --type 'system.*'` shows why")
    return out


def _lockdown(name: str) -> str:
    return (f"in lockdown: every grant is refused; `edge turnstile release {name}` ends it "
            "(two people: a second operator approves); when the gate itself is in lockdown "
            "(`edge gate status`), `edge gate mode normal --reason TEXT` ends it for every lane instead")


def _module_advice(h: dict[str, Any], name: str) -> list[str]:
    """A Modbus lane: one relay/input module, whose mode the driver keeps (lockdown survives restarts)."""
    out = []
    if h.get("fault") or h.get("in_service") is False:
        out.append(f"the Modbus I/O module does not answer ({h.get('fault') or 'not contacted yet'}): the lane "
                   "is out of service and every grant is refused; check the module's power, its network or "
                   "RS-485 cable, and host/tcp_port/unit in the config")
    if h.get("emergency"):
        out.append("fire-alarm release active; lock and lockdown are refused until it clears")
    if h.get("mode") == "lockdown":
        out.append(_lockdown(name))
    return out


def _module_line(d: dict[str, Any]) -> str:
    counters = d.get("counters") or {}
    grants = ", ".join(f"{k} x{v}" for k, v in (d.get("open_grants") or {}).items()) or "none"
    return (f"  module: {'in service' if d.get('in_service') else 'OUT OF SERVICE'}, mode {d.get('mode', '?')}, "
            f"in {counters.get('in', '?')} / out {counters.get('out', '?')}, open grants {grants}, "
            f"{d.get('failed_reads', 0)} failed reads of {d.get('polls', 0)} polls")


def _status_text(d: dict[str, Any]) -> str:
    # A stopped daemon's status file keeps only each driver's kind and state: no line settings.
    line_settings = (f" ({d.get('codec', '?')} on {d.get('port', '?')} at {d.get('baudrate', '?')} baud)"
                     if d.get("port") or d.get("codec") else "")
    lines = [f"{d['driver']}: {d.get('status')}{line_settings}, as of {d.get('updated_at')} "
             f"({human_age(d.get('figures_age_s'))} ago)"
             + ("" if d.get("daemon_running") else " — the daemon is NOT running")]
    if d.get("kind") == "turnstile.modbus" and "mode" in d:
        lines.append(_module_line(d))
    for address, dev in (d.get("devices") or {}).items():
        state = {True: "online", False: "OFFLINE", None: "not contacted yet"}[dev.get("online")]
        counters = dev.get("counters") or {}
        lines.append(f"  address {address}: {state}, mode {dev.get('mode', '?')}, "
                     f"in {counters.get('in', '?')} / out {counters.get('out', '?')}, "
                     f"reply {dev.get('rtt_ms', '?')} ms")
    line = d.get("line") or {}
    if line:
        lines.append(f"  line: {line.get('frames', 0)} frames, {line.get('garbage_bytes', 0)} noise bytes, "
                     f"{line.get('bad_checksum', 0)} bad checksums, {line.get('malformed', 0)} malformed; "
                     f"{d.get('retries', 0)} retries, {d.get('reconnects', 0)} reconnects")
    lines += [f"  check: {a}" for a in d["advice"]]
    return "\n".join(lines)
