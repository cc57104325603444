"""Open-time integrity check: a corrupt database is moved aside, never deleted."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from edge._fs import atomic_write, fsync_dir
from edge.errors import StoreError
from edge.sqlite import open_db

_CORRUPT = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def check_integrity(path: Path) -> str | None:
    """None when the file is healthy (or absent); otherwise what is wrong with it."""
    if not path.exists():
        return None
    try:
        # Read-only: a read-write connection would reset or delete a damaged WAL on close,
        # destroying the very evidence that is about to be moved aside.
        conn = open_db(path, readonly=True)
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
    fsync_dir(path.parent)
    return moved


_SUFFIXES = ("", "-wal", "-shm")


def _nth(n: int) -> str:
    return f".{n}" if n else ""




NOTE_NAME = "recovery.json"


def recover(path: Path, seq_resumes_at: int) -> dict | None:
    """Move a corrupt database aside; returns what the system.store_recovered alarm says.

    A note file is written (fsync'd) before anything moves and removed only after the
    alarm is stored (``recovery_recorded``), so a power cut between the move and the
    alarm still gets the alarm on the next start, never a silently fresh store.
    """
    note = path.with_name(NOTE_NAME)
    problem = check_integrity(path)
    if problem is not None:
        report = {"problem": problem, "seq_resumes_at": seq_resumes_at}
        _write_durably(note, report)
        report["moved_to"] = move_aside(path)
        _write_durably(note, report)
        return report
    try:
        report = json.loads(note.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # the note itself was cut short: the alarm still goes out
        report = {"problem": "unknown (recovery note unreadable)"}
    if "moved_to" not in report:  # cut between the note and the move
        report["moved_to"] = sorted(p.name for p in path.parent.glob(f"{path.name}.corrupt-*"))
    report["recorded_late"] = True
    return report


def recovery_recorded(path: Path) -> None:
    path.with_name(NOTE_NAME).unlink(missing_ok=True)


def _write_durably(path: Path, doc: dict) -> None:
    atomic_write(path, json.dumps(doc).encode())
