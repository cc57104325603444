"""Checks of the device itself: config, store and audit chain, disk, clock, trust keys, devices."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

from edge.doctor.check import Check
from edge.doctor.trust import check_packages, check_trust  # noqa: F401 (run_checks finds them here)
from edge.sqlite import open_db

_MIN_FREE_BYTES = 64 * 1024 * 1024
_MIN_FREE_FRACTION = 0.05


def check_config(config_path) -> tuple[object | None, list[Check]]:
    """(settings or None, checks). Driver options are validated too."""
    from edge.config import config_path as resolve
    from edge.config import load_settings
    from edge.errors import ConfigError

    path = resolve(config_path)
    try:
        settings = load_settings(path, check_drivers=True)
    except ConfigError as exc:
        checks = [Check("config", False, line, "fix this key, then run `edge config check`", str(path))
                  for line in exc.lines]
        try:  # driver options may be the only problem: keep diagnosing the rest
            return load_settings(path, check_drivers=False, check_files=False), checks
        except ConfigError:
            return None, checks
    return settings, [Check("config", True, f"valid: device {settings.device_id} at site {settings.site}, "
                            f"{len(settings.drivers)} driver(s), {len(settings.mqtt.brokers)} broker(s)",
                            target=str(path))]


def check_store(settings) -> list[Check]:
    path = settings.state_dir / "events.db"
    if not path.exists():
        return [Check("store", False, f"no event store at {path}", "start the daemon once: systemctl start edge",
                      str(path))]
    try:
        conn = open_db(path, readonly=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [Check("store", False, f"cannot open {path}: {exc}",
                      "check permissions of state_dir; run doctor as the daemon's user", str(path))]
    if problems != ["ok"]:
        return [Check("store", False, f"integrity check failed: {'; '.join(problems)}",
                      "the daemon moves a corrupt store aside on its next start; keep the file for analysis",
                      str(path))]
    return [Check("store", True, "SQLite integrity ok", target=str(path))]


def check_audit(settings) -> list[Check]:
    from edge.store import StoreReader

    if not (settings.state_dir / "events.db").exists():
        return [Check("audit", False, "no event store yet", "start the daemon once", str(settings.state_dir))]
    reader = StoreReader(settings.state_dir, readonly=True)
    try:
        report = reader.verify()
    except (OSError, sqlite3.Error) as exc:
        return [Check("audit", False, f"cannot verify: {exc}", "run doctor as the daemon's user")]
    finally:
        reader.close()
    r = report.as_dict()
    if r["ok"]:
        return [Check("audit", True, f"chain intact over {r['checked']} events")]
    return [Check("audit", False, f"chain broken at seq {r['break_seq']}: {r['problem']}",
                  "do not delete anything; report it to security (edge audit verify shows the break)")]


def check_disk(settings) -> list[Check]:
    folder = settings.state_dir if settings.state_dir.exists() else settings.state_dir.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return [Check("disk", False, f"cannot stat {folder}: {exc.strerror}", "create state_dir", str(folder))]
    free_mib, fraction = usage.free / 2**20, usage.free / usage.total if usage.total else 0
    detail = f"{free_mib:.0f} MiB free ({fraction:.0%}) on the file system of {folder}"
    if usage.free < _MIN_FREE_BYTES or fraction < _MIN_FREE_FRACTION:
        return [Check("disk", False, detail, "free space: old logs (journalctl --vacuum-size=100M), "
                      "core dumps; the store keeps alarms but drops telemetry when full", str(folder))]
    return [Check("disk", True, detail, target=str(folder))]


def check_clock(settings) -> list[Check]:
    from edge.clock import kernel_ntp_synced

    synced = kernel_ntp_synced()
    if synced:
        return [Check("clock", True, "synchronised (kernel NTP status)")]
    if synced is None:
        return [Check("clock", False, "cannot read the kernel's NTP status (adjtimex)",
                      "check time sync by hand: timedatectl status")]
    return [Check("clock", False, "NOT synchronised: events are flagged clock=unsynced and signed "
                  "commands may be refused as expired or not yet valid",
                  "timedatectl set-ntp true; check chronyc sources / systemd-timesyncd and UDP 123")]


def check_devices(settings) -> list[Check]:
    """Every configured serial port (``port``) and camera (``device``/``source``) is present and openable."""
    checks = []
    for entry in settings.drivers:
        options = entry.options()
        for key in ("port", "device", "source"):
            value = options.get(key)
            if value is None or isinstance(value, bool) or (isinstance(value, int) and key == "port"):
                continue  # a TCP port number is not a device
            checks.append(_open_device(entry.name, key, value))
    if not checks:
        checks.append(Check("devices", True, "no serial ports or cameras configured"))
    return checks


def _open_device(driver: str, key: str, value) -> Check:
    where = f"{driver}.{key}"
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        value = f"/dev/video{value}"  # OpenCV-style camera index
    if not isinstance(value, str) or "://" in value or not value.startswith("/"):
        return Check("devices", True, f"{value!r} is not a local device file; not checked", target=where)
    path = Path(value)
    if not path.exists():
        return Check("devices", False, f"{path} does not exist",
                     "is it plugged in? dmesg | tail; for USB serial check /dev/serial/by-id/", where)
    if path.is_dir():  # simulated cameras and scanners read image folders
        ok = os.access(path, os.R_OK | os.X_OK)
        return Check("devices", ok, f"{path} is a folder" + ("" if ok else " that cannot be read"),
                     "" if ok else "fix its permissions for the daemon's user", where)
    try:
        is_device = stat.S_ISCHR(path.stat().st_mode)
        # A device opens read-write without becoming the controlling tty and without
        # blocking on modem lines; no settings change, so a running driver is not
        # disturbed. A plain file (a recorded video) only needs to be readable.
        flags = os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK if is_device else os.O_RDONLY
        os.close(os.open(path, flags))
        kind = "character device" if is_device else "file"
    except PermissionError:
        return Check("devices", False, f"{path}: permission denied",
                     "add the daemon's user to the device's group (ls -l shows it, e.g. dialout, video)", where)
    except OSError as exc:
        return Check("devices", False, f"{path}: cannot open: {exc.strerror}",
                     "is another program holding it? fuser -v " + str(path), where)
    return Check("devices", True, f"{path} opens ({kind})", target=where)


def check_components(settings) -> list[Check]:
    """Every component thread of the running daemon is up (a down router runs no command)."""
    import json

    path = settings.state_dir / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return [Check("components", True, "daemon not running: nothing to check", target=str(path))]
    if not isinstance(status, dict) or not status.get("running"):
        return [Check("components", True, "daemon not running: nothing to check", target=str(path))]
    checks = []
    for name, report in sorted((status.get("components") or {}).items()):
        state = report.get("status") if isinstance(report, dict) else None
        if state == "down":
            error = report.get("last_error") or "stopped"
            checks.append(Check("components", False, f"{name} is down ({error})",
                                "it restarts by itself; if it stays down: journalctl -u edge, "
                                "then systemctl restart edge", name))
    return checks or [Check("components", True, "every component is running", target=str(path))]
