"""``edge drivers …``: what driver kinds are installed and what is configured."""

from __future__ import annotations

import click

from edge.cli._common import json_option, output


@click.group()
def drivers() -> None:
    """Installed driver kinds and configured driver instances."""


@drivers.command("list")
@json_option
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Registered kinds (entry points), and the configured instances with their health."""
    from edge.cli._state import read_status
    from edge.config import load_settings
    from edge.errors import ConfigError
    from edge.registry import kinds

    data = {"kinds": kinds(), "configured": []}
    try:
        settings = load_settings(ctx.find_root().obj.get("config_path"), check_drivers=False)
    except ConfigError:
        settings = None  # still useful: list what is installed
    if settings:
        health = (read_status(settings.state_dir) or {}).get("drivers", {})
        data["configured"] = [{"name": d.name, "kind": d.kind, **({"health": health[d.name]}
                              if d.name in health else {})} for d in settings.drivers]
    output(data, as_json, _text)


def _text(d: dict) -> str:
    lines = ["installed kinds:"] + [f"  {k:<22} {v}" for k, v in d["kinds"].items()]
    if d["configured"]:
        lines.append("configured:")
        for c in d["configured"]:
            status = c.get("health", {}).get("status", "not running")
            lines.append(f"  {c['name']:<22} {c['kind']:<22} {status}")
    return "\n".join(lines)
