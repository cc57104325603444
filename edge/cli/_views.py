"""What `edge status` and `edge events tail` compute and print, without click or pydantic.

Both are typed on slow devices by engineers in a hurry, so they must answer in well
under 0.3 s. Importing click alone costs about 80 ms of CPU here and pydantic more, so
this module needs only the standard library: the click commands and the fast path in
``edge.cli._fast`` share it, and there is one implementation of each view.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EX_NOT_RUNNING = 3  # as systemctl/LSB status: 3 means "not running"
DEFAULT_CONFIG = "/etc/edge/edge.toml"
STALE_STATUS_S = 60.0  # the daemon rewrites status.json every 10 s and on every health change


class LightSettings:
    """The four keys the fast views need, read from the TOML file and EDGE_ variables."""

    __slots__ = ("device_id", "site", "role", "state_dir", "drivers")


def light_config(path: str | None) -> LightSettings | None:
    """None whenever the file does not plainly give usable values: the caller then runs
    the full (pydantic) validation, so a broken config still gets its usual errors."""
    import tomllib

    path = path or os.environ.get("EDGE_CONFIG") or DEFAULT_CONFIG
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("EDGE_")}
    light = LightSettings()
    for key, default in (("device_id", None), ("site", None), ("role", None), ("state_dir", "/var/lib/edge")):
        value = env.get(f"EDGE_{key.upper()}", data.get(key, default))
        if not isinstance(value, str) or not value:
            return None
        setattr(light, key, value)
    if light.role not in ("gate", "tablet"):
        return None
    light.state_dir = Path(light.state_dir)
    drivers = data.get("drivers", [])
    plain = isinstance(drivers, list) and all(
        isinstance(d, dict) and isinstance(d.get("name"), str) and isinstance(d.get("kind"), str) for d in drivers)
    light.drivers = [(d["name"], d["kind"]) for d in drivers] if plain else None
    return light


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def status_report(settings) -> dict[str, Any]:
    """Daemon (from its status file), outbox (from the store) and disk, as one dict."""
    from edge.cli._state import live_status, open_reader, read_status
    from edge.errors import StoreError

    state_dir = settings.state_dir
    try:
        daemon = live_status(state_dir) or read_status(state_dir) or {"running": False}
    except StoreError as exc:  # no daemon to ask, and its status file is closed to this account
        daemon = {"running": False, "error": str(exc)}
    daemon.setdefault("source", "status_file")
    if daemon.get("updated_at"):  # the daemon rewrites its figures every few seconds: say how old they are
        daemon["figures_age_s"] = figures_age_s(daemon)
    try:
        reader = open_reader(state_dir)
        try:
            outbox = reader.stats()
        finally:
            reader.close()
    except (StoreError, sqlite3.Error) as exc:  # status must answer even with a broken store
        outbox = {"error": str(exc)}
    try:
        disk = shutil.disk_usage(state_dir)
        disk_info = {"free_bytes": disk.free, "total_bytes": disk.total}
    except FileNotFoundError:
        disk_info = {"error": f"{state_dir} does not exist"}
    except OSError as exc:  # e.g. a path under a file: state_dir = "/etc/edge/edge.toml/state"
        disk_info = {"error": f"{state_dir}: {exc.strerror}"}
    _mark_stale(daemon, disk_info)
    return {"device_id": settings.device_id, "site": settings.site, "role": settings.role,
            "daemon": daemon, "outbox": outbox, "disk": disk_info}


def figures_age_s(status: dict) -> float | None:
    """How old the daemon's status figures are, in seconds (None without a time)."""
    age = _age_of(status.get("updated_at"))
    return None if age is None else round(max(0.0, age), 1)


def _age_of(iso_ts: str | None) -> float | None:
    from datetime import datetime

    try:
        return time.time() - datetime.fromisoformat(iso_ts).timestamp()
    except (TypeError, ValueError):
        return None


def _mark_stale(daemon: dict, disk: dict) -> None:
    """Say when the status shown is old, and why: it must never pass for the present."""
    if not daemon.get("running"):
        return
    written = daemon.get("status_file") or {}
    if daemon["source"] == "control_socket":
        if written.get("written") is False:
            daemon["stale"] = {"why": f"status.json not written since {written.get('since')}: "
                                      f"{written.get('error')} (this status is live, from the daemon)"}
        return
    age = _age_of(daemon.get("updated_at"))
    if age is None or age <= STALE_STATUS_S:
        return
    why = ("the daemon could not rewrite status.json: the disk is full" if disk.get("free_bytes") == 0
           else "the daemon did not rewrite status.json and did not answer on its control socket; "
                "it may be hung (journalctl -u edge; systemctl restart edge)")
    daemon["stale"] = {"age_s": round(age, 1), "why": why}


def status_exit_code(report: dict) -> int:
    return 0 if report["daemon"].get("running") else EX_NOT_RUNNING


def status_text(r: dict) -> str:
    d = r["daemon"]
    lines = [f"device  {r['device_id']} ({r['role']}) at site {r['site']}"]
    if d.get("running"):
        lines.append(f"daemon  running, pid {d['pid']}, since {d.get('started_at', '?')}; "
                     f"figures below are {human_age(d.get('figures_age_s'))} old")
        stale = d.get("stale")
        if stale and "age_s" in stale:
            lines.append(f"        WARNING: status last updated {human_age(stale['age_s'])} ago (stale): "
                         f"{stale['why']}")
        elif stale:
            lines.append(f"        WARNING: {stale['why']}")
    else:
        lines.append(f"daemon  UNKNOWN: {d['error']}" if d.get("error") else
                     "daemon  NOT RUNNING (start it: systemctl start edge, or edge run)")
    for name, h in (d.get("drivers") or {}).items():
        extra = f" restarts={h['restarts']}" if h.get("restarts") else ""
        # a lane that keeps a mode (a Modbus turnstile) says it, and what ends a lockdown
        mode = f", mode {h['mode']}" + (f": {h['mode_note']}" if h.get("mode_note") else "") if h.get("mode") else ""
        err = f" last error: {h['last_error']}" if h.get("last_error") else ""
        lines.append(f"driver  {name:<20} {h.get('status', '?'):<9} {h.get('kind', '')}{mode}{extra}{err}")
        if h.get("note"):  # a driver says in words why it is not ok (a reader flooding, a tamper switch)
            lines.append(f"        {name}: {h['note']}")
    for name, c in (d.get("components") or {}).items():
        # A component may say it in words ("summary"); otherwise its scalar fields, leaving out
        # those without a value (a gate mode nobody set has no reason).
        summary = c.get("summary") or " ".join(
            f"{k}={v}" for k, v in c.items() if v is not None and k != "note" and not isinstance(v, dict | list))
        lines.append(f"{name:<7} {summary}")
        if c.get("note"):  # what needs a person: cards locked out, updates refused (and what to do)
            lines += [f"        {line}" for line in str(c["note"]).splitlines()]
    o = r["outbox"]
    if "error" in o:
        lines.append(f"outbox  unavailable: {o['error']}")
    else:
        lines.append(f"outbox  {o['pending']} pending, oldest {human_age(o['oldest_pending_age_s'])}, "
                     f"{human_bytes(o['bytes_used'])} of {human_bytes(o['max_bytes'])}"
                     + (f" (free disk space caps it at {human_bytes(o['cap_bytes'])})"
                        if (o.get("cap_bytes") or 0) < (o.get("max_bytes") or 0) else "")
                     + (", FULL" if o["full"] else ""))
        dropped = sum(o["dropped"].values())
        if dropped:
            lines.append(f"        dropped when full: {o['dropped']}")
    disk = r["disk"]
    lines.append(f"disk    {human_bytes(disk.get('free_bytes'))} free" if "free_bytes" in disk
                 else f"disk    {disk['error']}")
    return "\n".join(lines)


def event_line(body: bytes, acked_at: float | None, as_json: bool) -> str:
    """One stored event as a JSON line (--json) or one readable line."""
    if as_json:
        return body.decode()
    e = json.loads(body)
    flags = "" if e.get("clock") == "synced" else f" clock={e.get('clock')}"
    sent = "sent" if acked_at else "pending"
    payload = json.dumps(e.get("payload"), separators=(",", ":"))
    if len(payload) > 120:
        payload = payload[:117] + "..."
    return (f"{e['seq']:>8} {e['ts'][:23]} {e['priority']:<9} {e['type']:<28} {e['source']:<18} "
            f"{sent:<7}{flags} {payload}")


def tail(state_dir: Path, count: int, type_glob: str | None, follow: bool, as_json: bool,
         write: Callable[[str], None]) -> None:
    """Print the newest ``count`` events, then (``follow``) new ones until Ctrl-C."""
    from edge.cli._state import open_reader

    reader = open_reader(state_dir)
    last = 0
    try:
        for seq, body, acked_at in reader.tail(count, type_glob=type_glob):
            write(event_line(body, acked_at, as_json))
            last = seq
        if not follow:
            return
        last = last or reader.meta().get("next_seq", 1) - 1
        while True:  # the store lives in another process: poll its WAL cheaply
            rows = reader.tail(1000, type_glob=type_glob, after_seq=last)
            for seq, body, acked_at in rows:
                write(event_line(body, acked_at, as_json))
                last = seq
            if not rows:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        reader.close()
