"""``edge messages``: the tablet's mailbox for field engineers, counts only, never content."""

from __future__ import annotations

import click

from edge.cli._common import edge_errors, json_option, light_settings, output, require_role


@click.group()
def messages() -> None:
    """Secure messaging cache (counts only: no bodies, no names)."""


@messages.command()
@json_option
@click.pass_context
@edge_errors
def stats(ctx: click.Context, as_json: bool) -> None:
    """Residents, contacts, messages by direction and state, attachments, unread."""
    from services.messaging.component import stats_from_disk

    settings = light_settings(ctx)
    require_role(ctx, settings, "tablet", "the secure-messaging mailbox", as_json=as_json)
    s = stats_from_disk(settings.state_dir)
    output(s, as_json, lambda s: "\n".join([
        f"residents    {s['residents']} ({s['contacts']} contacts)",
        f"messages     {s['messages']} ({s['attachments']} attachments, {s['unread']} unread)",
        *(f"  {k:<14} {v}" for k, v in sorted(s["by_state"].items())),
        f"oldest       {s['oldest_age_days']} days" if s["oldest_age_days"] is not None else "oldest       -",
    ]))
