"""Open-time integrity check: a corrupt database is moved aside, never deleted."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from edge.errors import StoreError

_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def check_integrity(path: Path) -> str | None:
    """None when the file is healthy (or absent); otherwise what is wrong with it."""
    if not path.exists():
        return None
    try:
        # Read-only: a read-write connection would reset or delete a damaged WAL on close,
        # destroying the very evidence that is about to be moved aside.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", None) in _CORRUPT:
            return f"{type(exc).__name__}: {exc}"
        # Busy, permissions, I/O: not proof of corruption. Never move a healthy store aside.
        raise StoreError(f"cannot check the event store {path}: {exc}") from None
    if result != [("ok",)]:
        return "; ".join(str(r[0]) for r in result[:5])
    return None


def move_aside(path: Path) -> list[str]:
    """Rename the database and its WAL/SHM with a timestamp; returns the new names."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    # Two recoveries in the same second must not overwrite the first one's evidence.
    n = 0
    while any(path.with_name(f"{path.name}.corrupt-{stamp}{_nth(n)}{s}").exists() for s in _SUFFIXES):
        n += 1
    moved = []
    for suffix in _SUFFIXES:
        src = Path(f"{path}{suffix}")
        if src.exists():
            dst = src.with_name(f"{path.name}.corrupt-{stamp}{_nth(n)}{suffix}")
            src.rename(dst)
            moved.append(dst.name)
    _fsync_dir(path.parent)
    return moved


_SUFFIXES = ("", "-wal", "-shm")


def _nth(n: int) -> str:
    return f".{n}" if n else ""


def _fsync_dir(directory: Path) -> None:
    # The renames must survive a power cut, or a fresh store could reappear over the evidence.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
