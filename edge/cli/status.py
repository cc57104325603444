"""``edge status``: is the daemon running, are the drivers healthy, is the outbox draining."""

from __future__ import annotations

import shutil
import sqlite3
import sys

import click

from edge.cli._common import human_age, human_bytes, json_option, light_settings, output
from edge.cli._state import open_reader, read_status
from edge.errors import StoreError

EX_NOT_RUNNING = 3  # as systemctl/LSB status: 3 means "not running"


@click.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Daemon, drivers, outbox and disk at a glance. Exit 0 running, 3 stopped."""
    settings = light_settings(ctx)
    state_dir = settings.state_dir
    daemon = read_status(state_dir) or {"running": False}
    try:
        reader = open_reader(state_dir)
        outbox = reader.stats()
        reader.close()
    except (StoreError, sqlite3.Error) as exc:  # status must answer even with a broken store
        outbox = {"error": str(exc)}
    try:
        disk = shutil.disk_usage(state_dir)
        disk_info = {"free_bytes": disk.free, "total_bytes": disk.total}
    except FileNotFoundError:
        disk_info = {"error": f"{state_dir} does not exist"}
    report = {"device_id": settings.device_id, "site": settings.site, "role": settings.role,
              "daemon": daemon, "outbox": outbox, "disk": disk_info}
    output(report, as_json, _text)
    sys.exit(0 if daemon.get("running") else EX_NOT_RUNNING)


def _text(r: dict) -> str:
    d = r["daemon"]
    lines = [f"device  {r['device_id']} ({r['role']}) at site {r['site']}"]
    if d.get("running"):
        lines.append(f"daemon  running, pid {d['pid']}, since {d.get('started_at', '?')}")
    else:
        lines.append("daemon  NOT RUNNING (start it: systemctl start edge, or edge run)")
    for name, h in (d.get("drivers") or {}).items():
        extra = f" restarts={h['restarts']}" if h.get("restarts") else ""
        err = f" last error: {h['last_error']}" if h.get("last_error") else ""
        lines.append(f"driver  {name:<20} {h.get('status', '?'):<9} {h.get('kind', '')}{extra}{err}")
    for name, c in (d.get("components") or {}).items():
        summary = " ".join(f"{k}={v}" for k, v in c.items() if not isinstance(v, dict | list))
        lines.append(f"{name:<7} {summary}")
    o = r["outbox"]
    if "error" in o:
        lines.append(f"outbox  unavailable: {o['error']}")
    else:
        lines.append(f"outbox  {o['pending']} pending, oldest {human_age(o['oldest_pending_age_s'])}, "
                     f"{human_bytes(o['bytes_used'])} of {human_bytes(o['max_bytes'])}"
                     + (", FULL" if o["full"] else ""))
        dropped = sum(o["dropped"].values())
        if dropped:
            lines.append(f"        dropped when full: {o['dropped']}")
    disk = r["disk"]
    lines.append(f"disk    {human_bytes(disk.get('free_bytes'))} free" if "free_bytes" in disk
                 else f"disk    {disk['error']}")
    return "\n".join(lines)
