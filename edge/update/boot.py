"""Pick the slot to start, and roll back a new slot that never confirmed itself.

Standard library only: a copy lives beside the slots (``/opt/edge/boot.py``) and the
service runs ``python3 /opt/edge/boot.py --root / -- --config … run``, so that the
decision never depends on the code of the slot being judged (the RAUC/Mender boot
counter, in one file). It also holds the record and symlink primitives that
``edge.update.slots`` builds on, so both write the record the same way.

The record (``/opt/edge/update-state.json``) has ``state`` one of idle | installing |
installed | switched | confirmed | rolled_back. While ``switched``, every start counts
an attempt; past ``max_attempts`` starts or past ``deadline`` (epoch seconds) the
``current`` link goes back to ``rollback_to`` (absent: the base install in /opt/edge).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

PREFIX = "opt/edge"
RECORD = "update-state.json"
EX_RESTART = 75  # EX_TEMPFAIL: the service manager starts us again (Restart=on-failure)


def home(root: str | os.PathLike) -> Path:
    return Path(root) / PREFIX


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_record(root: str | os.PathLike) -> dict:
    try:
        return json.loads((home(root) / RECORD).read_text())
    except FileNotFoundError:
        return {"state": "idle", "current": None, "history": []}
    except ValueError:  # never written half (atomic), but a bad disk must not stop the boot
        print(f"boot: {home(root) / RECORD} is unreadable; starting the linked slot", file=sys.stderr)
        return {"state": "idle", "current": None, "history": []}


def write_record(root: str | os.PathLike, record: dict) -> None:
    """Atomically replace the record: after a power cut it is the old or the new one."""
    path = home(root) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(record, indent=1, sort_keys=True))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def mark_complete(slot: Path) -> None:
    """The last step of building a slot: from now on it may be started."""
    with open(slot / "COMPLETE", "w") as f:
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(slot)


def is_complete(slot: Path) -> bool:
    return (slot / "COMPLETE").is_file() and (slot / "bin" / "edge").exists()


def linked_version(root: str | os.PathLike) -> str | None:
    """The version ``current`` points at, or None when the base install runs."""
    link = home(root) / "current"
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name


def point_current(root: str | os.PathLike, version: str | None) -> None:
    """Atomically point ``current`` at releases/VERSION (None: remove it, base install)."""
    link = home(root) / "current"
    if version is None:
        link.unlink(missing_ok=True)
    else:
        tmp = link.with_name(".current.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(f"releases/{version}", tmp)
        os.replace(tmp, link)
    _fsync_dir(link.parent)


def roll_back(root: str | os.PathLike, record: dict, reason: str, *, reported: bool = False) -> dict:
    """Point ``current`` back and record why; the link first, so a cut leaves the old slot.

    The version goes on the ``failed`` list: it is not offered again, only a newer one.
    """
    point_current(root, record.get("rollback_to"))
    failed = [*record.get("failed", []), record.get("pending")][-10:]
    record.update(state="rolled_back", last_result={
        "result": "rolled_back", "version": record.get("pending"), "reason": reason, "at": time.time()},
        reported=reported, pending=None, failed=failed)
    write_record(root, record)
    return record


def decide(root: str | os.PathLike, now: float | None = None) -> tuple[Path, str | None]:
    """The ``edge`` executable to start and its slot version (None: the base install)."""
    now = time.time() if now is None else now
    record = read_record(root)
    if record.get("state") == "switched":
        pending = record.get("pending")
        if linked_version(root) != pending:
            roll_back(root, record, "interrupted during the switch")
        elif record.get("attempts", 0) >= record.get("max_attempts", 3):
            roll_back(root, record, f"not confirmed after {record.get('attempts', 0)} start(s)")
        elif now > record.get("deadline", 0):
            roll_back(root, record, "not confirmed before the health-check deadline")
        else:
            record["attempts"] = record.get("attempts", 0) + 1
            write_record(root, record)
    version = linked_version(root)
    exe = home(root) / "current" / "bin" / "edge"
    if version is None or not exe.exists():  # no slot, or a slot gone bad: the base install
        return home(root) / "bin" / "edge", None
    return exe, version


def main(argv: list[str] | None = None) -> None:
    """``boot.py [--root DIR] [--] EDGE_ARGS…``: decide, then exec the slot's ``edge``."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = "/"
    if args[:1] == ["--root"]:
        root, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    exe, version = decide(root)
    os.environ["EDGE_SLOT"] = version or ""
    os.environ["EDGE_INSTALL_ROOT"] = str(root)
    os.execv(exe, [str(exe), *args])


if __name__ == "__main__":
    main()
