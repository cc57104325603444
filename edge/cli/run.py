"""``edge run``: the daemon in the foreground (systemd runs exactly this).

The plain forms take a click-free path (``edge.cli._fast``); both run ``edge.cli._run.main``.
"""

from __future__ import annotations

import sys

import click


@click.command()
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the daemon until SIGTERM (exit 0) — a bad config exits 78, a store in use 1."""
    from edge.cli._run import main

    sys.exit(main(ctx.find_root().obj.get("config_path")))
