"""``edge events tail``: the newest events, optionally following new ones."""

from __future__ import annotations

import json
import time

import click

from edge.cli._common import edge_errors, json_option, light_settings
from edge.cli._state import open_reader


@click.group()
def events() -> None:
    """Read the local event store."""


@events.command("tail")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(0, 100_000),
              help="How many of the newest events to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--type", "type_glob", metavar="PATTERN", help="Only types matching, e.g. 'turnstile.*'.")
@json_option
@click.pass_context
@edge_errors
def tail(ctx: click.Context, count: int, follow: bool, type_glob: str | None, as_json: bool) -> None:
    """Show the newest events (JSON lines with --json)."""
    reader = open_reader(light_settings(ctx).state_dir)
    last = 0
    try:
        for seq, body, acked_at in reader.tail(count, type_glob=type_glob):
            _print(body, acked_at, as_json)
            last = seq
        if not follow:
            return
        last = last or reader.meta().get("next_seq", 1) - 1
        while True:  # the store lives in another process: poll its WAL cheaply
            rows = reader.tail(1000, type_glob=type_glob, after_seq=last)
            for seq, body, acked_at in rows:
                _print(body, acked_at, as_json)
                last = seq
            if not rows:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()


def _print(body: bytes, acked_at: float | None, as_json: bool) -> None:
    if as_json:
        click.echo(body.decode())
        return
    e = json.loads(body)
    flags = "" if e.get("clock") == "synced" else f" clock={e.get('clock')}"
    sent = "sent" if acked_at else "pending"
    payload = json.dumps(e.get("payload"), separators=(",", ":"))
    if len(payload) > 120:
        payload = payload[:117] + "..."
    click.echo(f"{e['seq']:>8} {e['ts'][:23]} {e['priority']:<9} {e['type']:<28} {e['source']:<18} "
               f"{sent:<7}{flags} {payload}", color=False)
