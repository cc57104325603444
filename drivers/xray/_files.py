"""File moves for the watch folder: complete-file detection, durable renames, quarantine notes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

from edge._fs import fsync_dir


def being_written(path: Path) -> bool:
    """True if some process has the file open for writing (Linux read lease refused).

    Where leases are unavailable (network shares, files we do not own) this
    says False and the size-stability check alone decides.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EBUSY)
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)




def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name.1``, ``name.2``… if taken: nothing is ever overwritten."""
    target = folder / name
    n = 0
    while target.exists() or target.with_name(target.name + ".reason.json").exists():
        n += 1
        target = folder / f"{name}.{n}"
    return target


def move(src: Path, folder: Path) -> Path:
    """Rename ``src`` into ``folder`` durably (same filesystem; never a copy)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, src.name)
    os.rename(src, target)
    fsync_dir(folder)
    fsync_dir(src.parent)
    return target


def write_reason(target: Path, reason: str, *, driver: str, size: int) -> Path:
    """Write ``<file>.reason.json`` beside a quarantined file (atomically)."""
    note = target.with_name(target.name + ".reason.json")
    tmp = note.with_name("." + note.name + ".tmp")
    body = {"file": target.name, "reason": reason, "bytes": size, "driver": driver,
            "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, note)
    fsync_dir(target.parent)
    return note


def read_reasons(folder: Path) -> list[dict]:
    """Every quarantine note in ``folder``, oldest first (what ``edge xray quarantine`` lists)."""
    notes = []
    for note in sorted(folder.glob("*.reason.json"), key=lambda p: p.stat().st_mtime):
        try:
            body = json.loads(note.read_text())
        except (OSError, ValueError):
            body = {"file": note.name.removesuffix(".reason.json"), "reason": "(reason file unreadable)"}
        body["path"] = str(folder / body.get("file", ""))
        notes.append(body)
    return notes
