"""``edge doctor``: every check on one line with ok/FAIL and what to do next."""

from __future__ import annotations

import json
import sys

import click

from edge.cli._common import EX_FAIL, json_option

_CHECKS = ("config", "store", "audit", "disk", "clock", "trust", "packages", "broker", "devices", "components")


@click.command()
@click.option("--only", multiple=True, type=click.Choice(_CHECKS), help="Run only these checks (repeatable).")
@click.option("--skip", multiple=True, type=click.Choice(_CHECKS), help="Leave these checks out (repeatable).")
@json_option
@click.pass_context
def doctor(ctx: click.Context, only: tuple[str, ...], skip: tuple[str, ...], as_json: bool) -> None:
    """Diagnose this device: config, store and audit chain, disk, clock, trust keys,
    each broker layer by layer (dns, tcp, tls, mqtt, roundtrip), serial ports and cameras.

    Exit 0 when every check passes, 1 when any fails.
    """
    from edge.doctor import run_checks

    printer = None if as_json else _print_line
    checks = run_checks(ctx.find_root().obj.get("config_path"), only=set(only) or None, skip=set(skip),
                        progress=printer)
    ok = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [c.as_dict() for c in checks]}))
    else:
        failed = sum(not c.ok for c in checks)
        click.echo(f"{len(checks)} checks, {failed} failed" if failed else f"{len(checks)} checks, all ok")
    sys.exit(0 if ok else EX_FAIL)


def _print_line(c) -> None:
    """Printed as each check finishes, so a slow broker does not hide the rest."""
    what = c.check + (f" {c.target}" if c.target and c.check == "broker" else "")
    what += f" {c.step}" if c.step else ""
    line = f"{'ok  ' if c.ok else 'FAIL'}  {what:<44} {c.detail}"
    if not c.ok and c.hint:
        line += f"  -> {c.hint}"
    elif c.target and c.check != "broker" and c.target not in c.detail:
        line += f"  [{c.target}]"
    click.echo(line)
