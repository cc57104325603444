"""``edge xray``: dose ledger, may-this-person-be-scanned check (``quarantine`` is the driver's).

Exit codes: 0 ok (check: may be scanned), 1 refused or failed, 78 bad config.
Everything works with the daemon stopped and the network down.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.cli._common import EX_FAIL, edge_errors, fail, json_option, output, settings_from


@click.group()
def xray() -> None:
    """Body scanners: dose ledger, dose check, quarantined result files."""


def _subject_id(subject: str, as_json: bool) -> str:
    """Refuse an id no scan can carry ('', 'A1234BC ', non-ASCII): its ledger is always empty, and
    `check` would answer 'may be scanned' for a typo."""
    import re

    from edge.schema import EXTERNAL_ID

    if not re.fullmatch(EXTERNAL_ID, subject):
        fail(f"subject {subject!r} is not a subject id: expected 1-128 ASCII letters, digits and _.:/@+- "
             "starting with a letter or digit, as the scanner records it (e.g. A1234BC)", as_json=as_json)
    return subject


def _ledger(settings):
    from services.xray.ledger import DoseLedger

    return DoseLedger(settings.state_dir, settings.site, settings.xray, readonly=True)


@xray.command("check")
@click.argument("subject")
@json_option
@click.pass_context
@edge_errors
def check(ctx: click.Context, subject: str, as_json: bool) -> None:
    """May SUBJECT be scanned now? Exit 0 yes, exit 1 no (at or over the limit, or cannot decide)."""
    from services.xray import check_subject

    result = check_subject(settings_from(ctx), _subject_id(subject, as_json))
    if as_json:
        output(result.as_dict(), True, "")
    elif not result.decided:
        click.echo(f"refused: cannot decide whether {subject} may be scanned: {_why(result.reason)}", err=True)
    elif result.allowed:
        click.echo(f"ok: {subject} may be scanned: {result.reason}; "
                   f"{result.remaining_usv:g} µSv remaining")
    else:
        click.echo(f"refused: {subject} must not be scanned: {result.reason}", err=True)
    if not result.allowed:
        raise SystemExit(EX_FAIL)


def _why(reason: str) -> str:
    return reason.removeprefix("cannot decide: ")


@xray.command("ledger")
@click.argument("subject")
@json_option
@click.pass_context
@edge_errors
def ledger_cmd(ctx: click.Context, subject: str, as_json: bool) -> None:
    """SUBJECT's dose history (all sites) and remaining allowance."""
    from services.xray import check_subject

    settings = settings_from(ctx)
    _subject_id(subject, as_json)
    first = check_subject(settings, subject)  # no ledger here, or the daemon's is down: never "may be scanned"
    if not first.decided:
        if as_json:
            output({**first.as_dict(), "scans": []}, True, "")
        else:
            click.echo(f"refused: no dose history for {subject} here: {_why(first.reason)}", err=True)
        raise SystemExit(EX_FAIL)
    ledger = _ledger(settings)
    try:
        result, rows = ledger.check(subject), ledger.history(subject)
    finally:
        ledger.close()
    output({**result.as_dict(), "scans": rows}, as_json, lambda _: _ledger_text(result, rows))


def _ledger_text(result, rows) -> str:
    lines = [f"{result.subject}: {result.total_usv:g} µSv in the window since {result.window_start[:10]}; "
             f"limit {result.limit_usv:g}, warning {result.warning_usv:g}, "
             f"remaining {result.remaining_usv:g} µSv — {'may be scanned' if result.allowed else 'REFUSED'}"]
    if not rows:
        lines.append("  no scans recorded")
    for r in rows:
        mark = "" if r["in_window"] else "  (outside window)"
        lines.append(f"  {r['time'][:19]}  {r['site']:<16} {r['dose_usv']:>8.3f} µSv  {r['scan_id']}"
                     f"  {r['reason'] or '-'}{mark}")
    return "\n".join(lines)


@xray.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_context
@edge_errors
def import_cmd(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Apply a signed dose-records file from central (offline reconciliation)."""
    from edge.trust import keys_for
    from services.xray.ledger import DoseLedger
    from services.xray.totals import MAX_DOC_BYTES, apply, parse_verified

    settings = settings_from(ctx)
    if file.stat().st_size > MAX_DOC_BYTES:
        fail(f"{file}: over the {MAX_DOC_BYTES}-byte limit for dose records", as_json=as_json)
    try:
        doc = json.loads(file.read_bytes())
    except ValueError as exc:
        fail(f"{file}: not valid JSON: {exc}", as_json=as_json)
    records = parse_verified(doc, site=settings.site, trusted=keys_for(settings, "dose_records"),
                             clock_skew_s=settings.trust.clock_skew_s)
    ledger = DoseLedger(settings.state_dir, settings.site, settings.xray)
    try:
        counts = apply(ledger, records)
    finally:
        ledger.close()
    output({"ok": True, **counts}, as_json,
           f"applied {counts['applied']} site record(s); {counts['stale']} stale, "
           f"{counts['own_site']} for this site ignored")
