"""``edge audit verify``: walk the tamper-evident chain and name the first break."""

from __future__ import annotations

import sys

import click

from edge.cli._common import edge_errors, json_option, light_settings, output
from edge.cli._state import open_reader


@click.group()
def audit() -> None:
    """Audit the local event store."""


@audit.command("verify")
@json_option
@click.pass_context
@edge_errors
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every stored event against the hash chain. Exit 1 on the first break."""
    reader = open_reader(light_settings(ctx).state_dir)
    try:
        total = reader.stats()["stored"]
        if as_json or total < 50_000:
            report = reader.verify()
        else:
            with click.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
                done = [0]

                def progress(n: int) -> None:
                    bar.update(n - done[0])
                    done[0] = n

                report = reader.verify(progress)
    finally:
        reader.close()
    output(report.as_dict(), as_json, _text)
    sys.exit(0 if report.ok else 1)


def _text(r: dict) -> str:
    span = f"seq {r['first_seq']}..{r['last_seq']}" if r["last_seq"] else "no events"
    if r["ok"]:
        return f"audit chain ok: {r['checked']} events checked ({span})"
    return (f"audit chain BROKEN at seq {r['break_seq']}: {r['problem']}\n"
            f"({r['checked']} events verified before the break; keep this device's store for investigation)")
