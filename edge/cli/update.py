"""``edge update status``: the running slot, its version, a pending update and the last result."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from edge.cli._common import json_option, output, settings_from


@click.group()
def update() -> None:
    """Signed over-the-air updates (A/B slots, automatic rollback)."""


def _when(epoch: float | None) -> str:
    if not epoch:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def update_report(settings) -> dict:
    from edge.cli._state import live_status, read_status
    from edge.update import boot

    root = settings.update.install_root
    record = boot.read_record(root)
    # From the daemon's memory when it can be asked (as `edge status` does): status.json is
    # rewritten only every few seconds, so a check just made would show as not made yet.
    daemon = live_status(settings.state_dir) or read_status(settings.state_dir) or {}
    live = (daemon.get("components") or {}).get("update") or {}
    return {"enabled": settings.update.metadata_url is not None, "channel": settings.update.metadata_url,
            "rollout_group": settings.update.rollout_group, "slot": boot.linked_version(root),
            "version": live.get("version"), "state": record.get("state", "idle"),
            "pending": record.get("pending"), "deadline": record.get("deadline") if record.get(
                "state") == "switched" else None,
            "last_result": record.get("last_result"), "previous": record.get("history", []),
            "failed": record.get("failed", []), "checked_at": live.get("checked_at"),
            "offer": live.get("offer"), "refusal": live.get("refusal"),
            "refusal_in_force": live.get("refusal_in_force", bool(live.get("refusal"))),
            "waiting_for_idle": live.get("waiting_for_idle", False)}


def _text(r: dict) -> str:
    lines = [f"updates:   {'on, from ' + r['channel'] if r['enabled'] else 'off ([update].metadata_url unset)'}",
             f"slot:      {r['slot'] or 'base install'} (running version {r['version'] or 'unknown: daemon not running'})",
             f"state:     {r['state']}" + (f", {r['pending']} on probation until {_when(r['deadline'])}"
                                           if r["deadline"] else ""),
             f"previous:  {', '.join(r['previous']) or 'none kept'}"]
    if r["pending"] and not r["deadline"]:
        lines.append(f"pending:   {r['pending']}")
    last = r["last_result"]
    if last:
        why = f": {last['reason']}" if last.get("reason") else ""
        lines.append(f"last:      {last['result']} {last.get('version')} at {_when(last.get('at'))}{why}")
    checked = _when(r["checked_at"])
    if checked == "never" and r["refusal"]:
        checked = "never completed (every try so far was refused: below)"
    lines.append(f"checked:   {checked}" + (" (waiting for empty lanes)" if r["waiting_for_idle"] else ""))
    refusal = r["refusal"]
    if refusal:
        when = f" at {_when(refusal.get('at'))}" if refusal.get("at") else ""
        over = "" if r.get("refusal_in_force", True) else " (since then a check succeeded)"
        lines.append(f"refused:   {refusal['problem']}{when}{over}: {refusal['detail']}")
        if refusal.get("action") and r["refusal_in_force"] and refusal["problem"] == "too_slow":
            lines.append(f"action:    {refusal['action']}")
    return "\n".join(lines)


@update.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Slot, version, pending update and last result. Exit 0."""
    report = update_report(settings_from(ctx))
    report["now"] = time.time()
    output(report, as_json, _text)
