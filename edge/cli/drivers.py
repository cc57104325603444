"""``edge drivers …``: what driver kinds are installed and what is configured."""

from __future__ import annotations

import click

from edge.cli._common import Seconds, json_option, output


@click.group("drivers")
def drivers_group() -> None:
    """Installed driver kinds and configured driver instances."""


@drivers_group.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Registered kinds (entry points), and the configured instances with their health."""
    from edge.cli._state import read_status
    from edge.registry import kinds

    data = {"kinds": kinds(), "configured": []}
    configured = _configured(ctx.find_root().obj.get("config_path"))
    if configured is not None:
        state_dir, entries = configured
        health = (read_status(state_dir) or {}).get("drivers", {})
        data["configured"] = [{"name": name, "kind": kind, **({"health": health[name]} if name in health else {})}
                              for name, kind in entries]
    output(data, as_json, _text)


def _configured(path):
    """(state_dir, [(name, kind)]) from the TOML alone when it is plainly usable (fast), else from
    the validated settings; None when the config is broken (installed kinds are still listed)."""
    from edge.cli._views import light_config

    light = light_config(path)
    if light is not None and light.drivers is not None:
        return light.state_dir, light.drivers
    from edge.config import load_settings
    from edge.errors import ConfigError

    try:
        settings = load_settings(path, check_drivers=False, check_files=False)
    except ConfigError:
        return None
    return settings.state_dir, [(d.name, d.kind) for d in settings.drivers]


@drivers_group.command("test")
@click.argument("name")
@click.option("--timeout", type=Seconds(max=3600), default=30.0, show_default=True,
              help="Seconds to wait for the answer.")
@json_option
@click.pass_context
def test(ctx: click.Context, name: str, timeout: float, as_json: bool) -> None:
    """Ask driver NAME for a status round trip ('ping') through the running daemon."""
    import time

    from edge.cli._common import EX_FAIL, EX_UNAVAILABLE, fail, settings_from
    from edge.commands.local import ControlUnavailable, send
    from edge.errors import CommandError

    settings = settings_from(ctx)
    started = time.monotonic()
    try:
        reply = send(settings.state_dir, name, "ping", {}, timeout=timeout)
    except ControlUnavailable as exc:
        fail(str(exc), EX_UNAVAILABLE, as_json=as_json)
    except CommandError as exc:
        fail(f"{name}: {exc}", as_json=as_json)
    data = {"driver": name, "ok": reply.get("status") == "ok", "round_trip_ms":
            round((time.monotonic() - started) * 1000, 2), "detail": reply.get("detail") or None,
            "result": reply.get("result")}
    output(data, as_json, _test_text)
    if not data["ok"]:
        ctx.exit(EX_FAIL)


def _test_text(d: dict) -> str:
    if not d["ok"]:
        return f"{d['driver']}: FAILED after {d['round_trip_ms']} ms: {d['detail']}"
    device = (d["result"] or {}).get("rtt_ms")
    extra = f" (device reply {device} ms)" if device is not None else ""
    return f"{d['driver']}: ok, round trip {d['round_trip_ms']} ms{extra}"


def _text(d: dict) -> str:
    lines = ["installed kinds:"] + [f"  {k:<22} {v}" for k, v in d["kinds"].items()]
    if d["configured"]:
        lines.append("configured:")
        for c in d["configured"]:
            status = c.get("health", {}).get("status", "not running")
            lines.append(f"  {c['name']:<22} {c['kind']:<22} {status}")
    return "\n".join(lines)
