"""``edge xray quarantine``: the result files this driver family refused, with the reason for each.

Registered under the ``edge.cli`` entry point as ``xray.quarantine``: a sub-command the
driver adds to the core's ``edge xray`` group, so the core knows neither the watch-folder
kind nor where it keeps refused files.
"""

from __future__ import annotations

import click

from edge.cli._common import edge_errors, json_option, output, settings_from


@click.command("quarantine")
@json_option
@click.pass_context
@edge_errors
def quarantine(ctx: click.Context, as_json: bool) -> None:
    """Result files the watch folders refused, with the reason for each."""
    from drivers.xray._files import read_reasons
    from edge.config import driver_config

    settings = settings_from(ctx)
    items = []
    for entry in settings.drivers:
        if entry.kind != "xray.folder":
            continue
        cfg = driver_config(entry)
        folder = cfg.quarantine_dir or cfg.path / "quarantine"
        if folder.is_dir():
            items += [{"driver": entry.name, **note} for note in read_reasons(folder)]
    output(items, as_json, lambda _: _quarantine_text(items))


def _quarantine_text(items) -> str:
    if not items:
        return "no quarantined files"
    return "\n".join(f"{i.get('quarantined_at', '?')}  {i['driver']}  {i['path']}\n    {i.get('reason')}"
                     for i in items)
