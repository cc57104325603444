"""Open-time integrity check: a corrupt database is moved aside, never deleted."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def check_integrity(path: Path) -> str | None:
    """None when the file is healthy (or absent); otherwise what is wrong with it."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path)
        try:
            result = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"{type(exc).__name__}: {exc}"
    if result != [("ok",)]:
        return "; ".join(str(r[0]) for r in result[:5])
    return None


def move_aside(path: Path) -> list[str]:
    """Rename the database and its WAL/SHM with a timestamp; returns the new names."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            dst = src.with_name(f"{path.name}.corrupt-{stamp}{suffix}")
            src.rename(dst)
            moved.append(dst.name)
    return moved
