"""File moves for the watch folder: complete-file detection, durable renames, quarantine notes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
import time
from pathlib import Path

from edge._fs import fsync_dir
from edge.errors import DriverError

_NAME_MAX = 255  # bytes, per path component (ext4, xfs, tmpfs)
_NOTE = ".reason.json"


class NotRegular(OSError):
    """The path is not a regular file (a FIFO, a device, a folder, a symlink) and was not read."""


def open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file; returns (binary file, size).

    Non-blocking and without following a link, and the *opened descriptor* is
    checked: a FIFO swapped in after a check of the path cannot hang the driver.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file (FIFO, device or folder); not read", str(path))
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def check_inbox(inbox: Path) -> None:
    """A result file carries no signature: whoever may write into the inbox may drop a forged
    clear scan. Refused when every account on the device may (mode o+w, sticky bit or not)."""
    try:
        mode = os.stat(inbox).st_mode
    except OSError as exc:
        raise DriverError(f"{inbox}: cannot check the inbox: {exc.strerror or exc}") from None
    if mode & stat.S_IWOTH:
        raise DriverError(f"the inbox is writable by every account (mode {stat.S_IMODE(mode):04o}): any of them "
                          f"could drop a forged clear scan; run chmod o-w {inbox} (write only for the scanner's "
                          "export account and the daemon); nothing is read until then")


def check_output_folder(folder: Path, inbox: Path) -> None:
    """processed/ and quarantine/ must be real folders on the inbox's filesystem (never a link).

    A link would carry scans out of the inbox; another filesystem makes a rename a copy.
    """
    try:
        st, home = os.lstat(folder), os.stat(inbox)
    except OSError as exc:
        raise DriverError(f"{folder}: cannot check the output folder: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise DriverError(f"{folder}: must be a real folder, not a symbolic link or a file; "
                          "scans are not moved until it is")
    if st.st_dev != home.st_dev:
        raise DriverError(f"{folder}: is on another filesystem than the inbox {inbox}; "
                          "it must be on the same one (moves are renames)")


def stored_name(name: str) -> str:
    """A name that fits beside its reason note and a .N suffix; long names keep a hash of the rest."""
    room = _NAME_MAX - len(_NOTE) - 6
    raw = os.fsencode(name)
    if len(raw) <= room:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return os.fsdecode(raw[:room - 17]) + "~" + digest


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
    name = stored_name(name)
    target = folder / name
    n = 0
    while target.exists() or target.with_name(target.name + _NOTE).exists():
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
