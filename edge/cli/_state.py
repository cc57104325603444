"""Reading the daemon's state from outside: its status file and its store."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from edge.errors import StoreError

STATUS_FILE = "status.json"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The daemon's last status, with ``running`` corrected if the process is gone."""
    try:
        status = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except PermissionError:
        raise StoreError(_unreadable(state_dir / STATUS_FILE, "the daemon's status file")) from None
    except (OSError, ValueError):  # none yet, state_dir under a file, a torn or garbled file: no status
        return None
    if not isinstance(status, dict):
        return None
    status["running"] = bool(status.get("running")) and pid_alive(status.get("pid"))
    return status


def live_status(state_dir: Path, timeout: float = 1.0) -> dict[str, Any] | None:
    """The running daemon's status from memory, through its control socket; None when it
    cannot be asked (not running, no permission, an older daemon): use status.json then."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(state_dir / "control.sock"))
        sock.sendall(b'{"op": "status"}\n')
        reply = json.loads(sock.makefile("rb").readline(4 * 1024 * 1024) or b"{}")
    except (OSError, ValueError):
        return None
    finally:
        sock.close()
    daemon = reply.get("daemon") if isinstance(reply, dict) else None
    if not isinstance(daemon, dict) or reply.get("status") != "ok":
        return None
    daemon["source"] = "control_socket"
    return daemon


def open_reader(state_dir: Path):
    """A read-only store view; StoreError when there is no store yet."""
    from edge.store import StoreReader

    path = state_dir / "events.db"
    if not os.access(path, os.R_OK) and (path.exists() or state_dir.exists() and not os.access(state_dir, os.X_OK)):
        raise StoreError(_unreadable(path, "the event store"))
    if not (state_dir / "events.db").exists():
        raise StoreError(f"no event store in {state_dir}; has `edge run` started on this device yet?")
    reader = StoreReader(state_dir, readonly=True)
    try:
        reader.meta()  # SQLite reads the file's header only now: a damaged one fails here, not mid-command
    except sqlite3.DatabaseError as exc:
        reader.close()
        raise StoreError(store_problem(path, exc)) from None
    return reader


def store_problem(path: Path, exc: sqlite3.DatabaseError) -> str:
    """What an unreadable event store means, and what to do: a damaged file is recovered by the daemon."""
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return (f"the event store {path} is damaged ({exc}); the daemon moves it aside and salvages every "
                "readable event when it next starts (systemctl restart edge; docs/faults.md)")
    return f"cannot read the event store {path}: {exc}"


def _unreadable(path: Path, what: str) -> str:
    """Operators (group edge) reach the control socket only: say so, and which account reads ``path``."""
    from edge.access import refusal

    why = refusal(path, os.R_OK, what) or f"cannot read {what} {path}: permission denied"
    return f"{why}; as an operator, ask the daemon instead (edge status, edge cmd local ...)"
