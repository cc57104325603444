"""``edge run``: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import sys

import click

from edge.cli._common import EX_CONFIG, edge_errors, settings_from


@click.command()
@click.pass_context
@edge_errors
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM (exit 0) — a bad config exits 78, a store in use 1."""
    settings = settings_from(ctx, check_drivers=True, check_state_dir=True)
    from edge import logs

    logs.configure(settings.logging.level, settings.logging.format)
    from edge.config import config_path
    from edge.daemon import Daemon
    from edge.errors import ConfigError

    daemon = Daemon(settings)
    daemon.config_path = config_path(ctx.find_root().obj.get("config_path"))
    try:
        code = daemon.run()
    except ConfigError as exc:  # a refused trust anchor: systemd must not restart-loop on it
        for line in exc.lines:
            click.echo(f"config error: {line}", err=True)
        sys.exit(EX_CONFIG)
    sys.exit(code)
