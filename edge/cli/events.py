"""``edge events tail``: the newest events, optionally following new ones."""

from __future__ import annotations

import click

from edge.cli import _views
from edge.cli._common import edge_errors, json_option, light_settings


def _pattern(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("an empty pattern; give a type or a glob, e.g. 'turnstile.*' "
                                 "(leave --type out for every type)")
    return value


@click.group()
def events() -> None:
    """Read the local event store."""


@events.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="How many of the newest events to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--type", "type_glob", metavar="PATTERN", callback=lambda _ctx, _param, value: _pattern(value),
              help="Only types matching, e.g. 'turnstile.*'.")
@json_option
@click.pass_context
@edge_errors
def tail(ctx: click.Context, count: int, follow: bool, type_glob: str | None, as_json: bool) -> None:
    """Show the newest events (JSON lines with --json)."""
    _views.tail(light_settings(ctx).state_dir, count, type_glob, follow, as_json,
                lambda line: click.echo(line, color=False))
