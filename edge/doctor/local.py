"""Checks of the device itself: config, store and audit chain, disk, clock, trust keys, devices."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

from edge._fs import KeyFileError
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
        from edge.limits import state_dir_problem

        problem = state_dir_problem(settings.state_dir)
        if problem and "permission denied" not in problem:  # doctor may run as another account than the daemon
            return [Check("store", False, f"state_dir {settings.state_dir} {problem}",
                          "set state_dir to a folder the daemon can write, then `edge config check`",
                          str(settings.state_dir))]
        return [Check("store", False, f"no event store at {path}", "start the daemon once: systemctl start edge",
                      str(path))]
    try:
        conn = open_db(path, readonly=True)
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if _damaged(exc):
            return [Check("store", False, f"damaged: {exc}", _RECOVERY, str(path))]
        return [Check("store", False, f"cannot open {path}: {exc}",
                      "check permissions of state_dir; run doctor as the daemon's user", str(path))]
    if problems != ["ok"]:
        return [Check("store", False, f"integrity check failed: {'; '.join(problems)}",
                      "the daemon moves a corrupt store aside on its next start; keep the file for analysis",
                      str(path))]
    return [Check("store", True, "SQLite integrity ok", target=str(path))]


_RECOVERY = ("the daemon moves a damaged store aside and salvages every readable event when it next "
             "starts (systemctl restart edge; docs/faults.md); keep the moved file for analysis")


def _damaged(exc: sqlite3.Error) -> bool:
    """Corruption, as opposed to a busy or closed file: only the daemon's recovery mends it."""
    return getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def check_audit(settings) -> list[Check]:
    from edge.store import StoreReader

    if not (settings.state_dir / "events.db").exists():
        return [Check("audit", False, "no event store yet", "start the daemon once", str(settings.state_dir))]
    reader = StoreReader(settings.state_dir, readonly=True)
    try:
        report = reader.verify()
    except sqlite3.DatabaseError as exc:
        if _damaged(exc):
            return [Check("audit", False, f"cannot verify: the event store is damaged ({exc})", _RECOVERY)]
        return [Check("audit", False, f"cannot verify: {exc}", "run doctor as the daemon's user")]
    except OSError as exc:
        return [Check("audit", False, f"cannot verify: {exc}", "run doctor as the daemon's user")]
    except KeyFileError as exc:  # the audit key's folder is unsafe: its message says the fix
        return [Check("audit", False, f"cannot verify: {exc}", "docs/secrets.md says who owns which key file")]
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
            checks.append(_open_device(entry.name, key, value, settings.state_dir))
    if not checks:
        checks.append(Check("devices", True, "no serial ports or cameras configured"))
    return checks


def _open_device(driver: str, key: str, value, state_dir: Path) -> Check:
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
        return _refused(path, 0o6 if is_device else 0o4, where, state_dir)
    except OSError as exc:
        return Check("devices", False, f"{path}: cannot open: {exc.strerror}",
                     "is another program holding it? fuser -v " + str(path), where)
    return Check("devices", True, f"{path} opens ({kind})", target=where)


def _refused(path: Path, need: int, where: str, state_dir: Path) -> Check:
    """A device this account may not open. What the lane needs is the daemon's access: when
    someone else runs doctor (an operator), say what the daemon's account may do and, apart,
    that this account is refused."""
    import grp
    import pwd

    st = path.stat()
    group = _entry_name(grp.getgrgid, st.st_gid)
    facts = f"{path} (owner {_entry_name(pwd.getpwuid, st.st_uid)}, group {group}, mode {stat.S_IMODE(st.st_mode):04o})"
    me = _entry_name(pwd.getpwuid, os.geteuid())
    daemon = _daemon_account(state_dir)
    who = daemon[0] if daemon else "the daemon's user"
    fix = (f"add {who} to group {group}: usermod -aG {group} {who}, or SupplementaryGroups={group} in a "
           "drop-in (systemctl edit edge); then systemctl restart edge")
    if daemon is None:
        return Check("devices", False, f"{facts}: {me}, who ran this check, may not open it (which account the "
                     f"daemon runs as cannot be told here: it owns {state_dir})", fix, where)
    if daemon[1] == os.geteuid():
        return Check("devices", False, f"{facts}: the daemon's account, {me}, may not open it", fix, where)
    name, uid, gids, source = daemon
    if _may_open(st, uid, gids, need):
        return Check("devices", True, f"{facts}: the daemon's account {name} may open it ({source}); "
                     f"{me}, who ran this check, may not, which the service does not need", target=where)
    return Check("devices", False, f"{facts}: the daemon's account {name} may not open it ({source}); "
                 f"nor may {me}, who ran this check", fix, where)


def _entry_name(table, key: int) -> str:
    try:
        return table(key)[0]
    except KeyError:
        return str(key)


def _may_open(st: os.stat_result, uid: int, gids: set[int], need: int) -> bool:
    """What the kernel's mode bits allow ``uid`` with ``gids`` (no ACLs): ``need`` 6 rw, 4 r."""
    if uid == 0:
        return True
    shift = 6 if st.st_uid == uid else 3 if st.st_gid in gids else 0
    return (st.st_mode >> shift) & need == need


def _daemon_account(state_dir: Path) -> tuple[str, int, set[int], str] | None:
    """(name, uid, groups, how we know) of the daemon: the running process's own credentials
    (/proc, any account may read them; its pid from the control socket), else the owner of
    the state folder systemd made for it, its groups in /etc/group and the unit's
    SupplementaryGroups. None when neither can be told."""
    import pwd

    from edge.cli._state import live_status

    pid = (live_status(state_dir) or {}).get("pid")
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{int(pid)}/status").read_text().splitlines()
                      if ":" in line)
        uid = int(fields["Uid"].split()[1])
        gids = {int(fields["Gid"].split()[1]), *map(int, fields["Groups"].split())}
        return _entry_name(pwd.getpwuid, uid), uid, gids, f"the running daemon, pid {pid}"
    except (TypeError, ValueError, KeyError, OSError):
        pass
    try:
        uid = state_dir.stat().st_uid
        user = pwd.getpwuid(uid)
        gids = set(os.getgrouplist(user.pw_name, user.pw_gid)) | _unit_groups()
    except (OSError, KeyError):
        return None
    return user.pw_name, uid, gids, "not running: by its groups and the unit's SupplementaryGroups"


def _unit_groups() -> set[int]:
    """The installed unit's SupplementaryGroups (drop-ins after it; an empty one clears the list)."""
    import grp

    unit = Path("/etc/systemd/system/edge.service")
    names: list[str] = []
    for path in [unit, *sorted(unit.with_name("edge.service.d").glob("*.conf"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.strip().partition("=")
            if key == "SupplementaryGroups":
                names = names + value.split() if value.strip() else []
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            continue
    return gids


def check_components(settings) -> list[Check]:
    """Every component thread of the running daemon is up (a down router runs no command)."""
    import json

    from edge.cli._state import live_status

    path = settings.state_dir / "status.json"
    try:  # the daemon's memory when it answers (status.json is a few seconds old), else its file
        status = live_status(settings.state_dir) or json.loads(path.read_text())
    except (OSError, ValueError):
        return [Check("components", True, "daemon not running: nothing to check", target=str(path))]
    if not isinstance(status, dict) or not status.get("running"):
        return [Check("components", True, "daemon not running: nothing to check", target=str(path))]
    checks, notes = [], []
    for name, report in sorted((status.get("components") or {}).items()):
        state = report.get("status") if isinstance(report, dict) else None
        if state == "down":
            error = report.get("last_error") or "stopped"
            checks.append(Check("components", False, f"{name} is down ({error})",
                                "it restarts by itself; if it stays down: journalctl -u edge, "
                                "then systemctl restart edge", name))
        elif state == "degraded" and report.get("note"):  # running, but it says a person must act (updates refused)
            checks.append(Check("components", False, f"{name} is degraded: {report['note']}",
                                "what to do is in this line; `edge status` shows it too", name))
        elif isinstance(report, dict) and report.get("note"):  # not a fault, but a person may be asked (a locked card)
            notes.append(Check("components", True, f"{name}: {report['note']}", target=name))
    for name, report in sorted((status.get("drivers") or {}).items()):
        state = report.get("status") if isinstance(report, dict) else None
        if state in ("down", "degraded"):
            why = report.get("note") or report.get("last_error") or report.get("port_error") or "no reason given"
            checks.append(Check("components", False, f"driver {name} is {state}: {why}",
                                "edge status; edge events tail -n 50 (its events say since when)", name))
    return (checks or [Check("components", True, "every component and driver is running", target=str(path))]) + notes
