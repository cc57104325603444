"""``edge status``: is the daemon running, are the drivers healthy, is the outbox draining."""

from __future__ import annotations

import sys

import click

from edge.cli._common import json_option, light_settings, output
from edge.cli._views import EX_NOT_RUNNING, status_exit_code, status_report, status_text

__all__ = ["EX_NOT_RUNNING", "status"]


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Daemon, drivers, outbox and disk at a glance. Exit 0 running, 3 stopped."""
    report = status_report(light_settings(ctx))
    output(report, as_json, status_text)
    sys.exit(status_exit_code(report))
