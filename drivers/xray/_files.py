"""File moves for the watch folder: complete-file detection, durable renames, quarantine notes."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import secrets
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
    """processed/ and quarantine/ must be real folders on the inbox's filesystem, ours (see ``open_folder``)."""
    os.close(open_folder(folder, inbox))


def open_folder(folder: Path, inbox: Path) -> int:
    """A descriptor of output folder ``folder``, checked on the descriptor itself.

    Never a link (it would carry scans out of the inbox), on the inbox's filesystem
    (another makes a rename a copy), and owned by the daemon's account or root: the
    scanner's account may write the inbox, so it can put a folder of its own in
    quarantine/'s place and plant links in it. Moves and notes then go through this
    descriptor, so a folder swapped after the check is not the one written.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise DriverError(f"{folder}: must be a real folder, not a symbolic link or a file; "
                              "scans are not moved until it is") from None
        raise DriverError(f"{folder}: cannot check the output folder: {exc.strerror or exc}") from None
    try:
        st, home = os.fstat(fd), os.stat(inbox)
        if st.st_dev != home.st_dev:
            raise DriverError(f"{folder}: is on another filesystem than the inbox {inbox}; "
                              "it must be on the same one (moves are renames)")
        if st.st_uid not in (os.geteuid(), 0):
            raise DriverError(f"{folder}: belongs to uid {st.st_uid}, not to the daemon's account: whoever "
                              "owns it can plant links where quarantine notes are written; scans are not "
                              f"moved until it is removed (the daemon makes it again) or chown'd to uid {os.geteuid()}")
    except BaseException:
        os.close(fd)
        raise
    return fd


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




def _taken(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def free_name(dir_fd: int, name: str) -> str:
    """``name``, or ``name.1``, ``name.2``… if taken in the folder: nothing is ever overwritten."""
    name = stored_name(name)
    target, n = name, 0
    while _taken(dir_fd, target) or _taken(dir_fd, target + _NOTE):
        n += 1
        target = f"{name}.{n}"
    return target


def move(src: Path, folder: Path, inbox: Path) -> Path:
    """Rename ``src`` into ``folder`` durably (same filesystem; never a copy), through a checked descriptor."""
    fd = open_folder(folder, inbox)
    try:
        target = free_name(fd, src.name)
        os.rename(src, target, dst_dir_fd=fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(src.parent)
    return folder / target


def write_reason(target: Path, inbox: Path, reason: str, *, driver: str, size: int) -> Path:
    """Write ``<file>.reason.json`` beside a quarantined file (atomically).

    The temporary file is made new (O_EXCL, O_NOFOLLOW) in the checked folder: a link
    planted under its name is never followed to overwrite a file the daemon can write.
    """
    note = target.name + _NOTE
    body = {"file": target.name, "reason": reason, "bytes": size, "driver": driver,
            "quarantined_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    fd = open_folder(target.parent, inbox)
    try:
        tmp = f".{note}.{secrets.token_hex(4)}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666,
                      dir_fd=fd)
        with os.fdopen(out, "w") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, note, src_dir_fd=fd, dst_dir_fd=fd)
        os.fsync(fd)
    finally:
        os.close(fd)
    return target.parent / note


def read_reasons(folder: Path) -> list[dict]:
    """Every quarantine note in ``folder``, oldest first (what ``edge xray quarantine`` lists).

    A note that is a link is not followed: the CLI may run as an account that can read
    what the scanner's account cannot.
    """
    notes = []
    for note in sorted(folder.glob("*.reason.json"), key=lambda p: p.lstat().st_mtime):
        try:
            f, _ = open_regular(note)
            with f:
                body = json.loads(f.read(1024 * 1024))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            body = {"file": note.name.removesuffix(".reason.json"), "reason": "(reason file unreadable)"}
        body["path"] = str(folder / str(body.get("file", "")))
        notes.append(body)
    return notes
