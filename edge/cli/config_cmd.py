"""``edge config check``: validate a config file without starting anything."""

from __future__ import annotations

import sys

import click

from edge.cli._common import EX_CONFIG, json_option, output


@click.group()
def config() -> None:
    """Work with the configuration file."""


@config.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@json_option
@click.pass_context
def check(ctx: click.Context, path: str | None, as_json: bool) -> None:
    """Validate PATH (default: --config) including every driver's options. Exit 78 when bad."""
    from edge.config import config_path, load_settings
    from edge.errors import ConfigError
    from edge.limits import check_state_dir

    target = config_path(path or ctx.find_root().obj.get("config_path"))
    try:
        settings = load_settings(target)
        check_state_dir(settings, target)
        from edge.trust import load_anchors

        load_anchors(settings.trust.central_keys)  # public keys only, roles, modes: as `edge run` checks
    except ConfigError as exc:
        output({"ok": False, "path": str(target), "errors": exc.lines}, as_json,
               lambda d: "\n".join(f"config error: {line}" for line in d["errors"]))
        sys.exit(EX_CONFIG)
    from edge.config import ignored_env

    summary = {"ok": True, "path": str(target), "device_id": settings.device_id, "site": settings.site,
               "role": settings.role, "drivers": [d.name for d in settings.drivers], "warnings": ignored_env()}
    output(summary, as_json, lambda d: "\n".join([f"{d['path']}: ok ({d['role']} {d['device_id']}, "
                                                  f"{len(d['drivers'])} drivers)",
                                                  *(f"warning: {w}" for w in d["warnings"])]))
