"""``edge outbox …``: what is waiting to be sent."""

from __future__ import annotations

import click

from edge.cli._common import (
    Seconds,
    edge_errors,
    human_age,
    human_bytes,
    json_option,
    light_settings,
    output,
    settings_from,
)
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
    reader = open_reader(light_settings(ctx).state_dir)
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


@outbox.command("drain")
@click.option("--timeout", type=Seconds(max=7 * 86400), default=None, help="Give up after this many seconds.")
@json_option
@click.pass_context
@edge_errors
def drain(ctx: click.Context, timeout: float | None, as_json: bool) -> None:
    """Send everything pending to the broker now (the daemon must be stopped)."""

    from edge.cli._state import read_status
    from edge.mqtt.drain import drain as run_drain

    settings = settings_from(ctx)
    running = read_status(settings.state_dir) or {}
    if running.get("running"):
        from edge.cli._common import fail

        fail(f"the daemon is running (pid {running.get('pid')}) and is already draining the outbox; "
             "`edge status` shows its progress. To drain in the foreground, stop it first "
             "(systemctl stop edge): two writers would fight over the store", as_json=as_json)
    import time

    started = time.monotonic()
    with click.progressbar(length=1, label="draining outbox", file=click.get_text_stream("stderr"),
                           show_pos=True, show_percent=True, item_show_func=lambda rate: rate) as bar:
        def progress(acked: int, total: int) -> None:
            bar.length = max(total, acked, 1)
            rate = acked / max(time.monotonic() - started, 1e-3)
            bar.update(acked - bar.pos, current_item=f"{rate:,.0f} events/s")
        result = run_drain(settings, timeout=timeout, on_progress=progress)
    output(result, as_json, _drain_text)
    if not result["ok"]:
        ctx.exit(1)


def _drain_text(r: dict) -> str:
    if r["pending_before"] == 0 and r["pending"] == 0:
        return "nothing to drain: no event is waiting to be sent"
    line = (f"sent {r['sent_events']} events in {r['seconds']:.1f} s ({r['events_per_s'] or 0} events/s) "
            f"via {r['broker']}; {r['pending']} still pending")
    if r["last_refusal"]:
        ref = r["last_refusal"]
        line += (f"\nthe broker refused {r['refused_messages']} messages, last: {ref['code']} {ref['reason']} "
                 f"on {ref['topic']} (check this device's ACL on the broker)")
    return line
