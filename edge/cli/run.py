"""``edge run``: the daemon in the foreground (systemd runs exactly this)."""

from __future__ import annotations

import sys

import click

from edge.cli._common import settings_from


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM (exit 0) — a bad config exits 78."""
    settings = settings_from(ctx, check_drivers=True)
    from edge import logs

    logs.configure(settings.logging.level, settings.logging.format)
    from edge.daemon import Daemon

    sys.exit(Daemon(settings).run())
