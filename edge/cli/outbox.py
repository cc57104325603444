"""``edge outbox …``: what is waiting to be sent."""

from __future__ import annotations

import click

from edge.cli._common import edge_errors, human_age, human_bytes, json_option, output, settings_from
from edge.cli._state import open_reader


@click.group()
def outbox() -> None:
    """Inspect the store-and-forward outbox."""


@outbox.command("stats")
@json_option
@click.pass_context
@edge_errors
def stats(ctx: click.Context, as_json: bool) -> None:
    """Pending events, oldest age, bytes, acks and drops."""
    reader = open_reader(settings_from(ctx).state_dir)
    try:
        data = reader.stats()
    finally:
        reader.close()
    output(data, as_json, _text)


def _text(s: dict) -> str:
    return "\n".join([
        f"pending        {s['pending']} (oldest seq {s['oldest_pending_seq'] or '-'}, "
        f"age {human_age(s['oldest_pending_age_s'])})",
        f"stored         {s['stored']} events, {human_bytes(s['bytes_used'])} of {human_bytes(s['max_bytes'])}"
        f" (file {human_bytes(s['file_bytes'])})",
        f"acked          {s['acked_total']} total, last {human_age(s['last_ack_age_s'])} ago",
        f"next seq       {s['next_seq']}",
        f"dropped        alarm={s['dropped']['alarm']} normal={s['dropped']['normal']} "
        f"telemetry={s['dropped']['telemetry']}; refused={s['refused']}",
        f"full           {'YES - only alarms are accepted' if s['full'] else 'no'}",
    ])
