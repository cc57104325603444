"""Reading the daemon's state from outside: its status file and its store."""

from __future__ import annotations

import json
import os
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
        status = json.loads((state_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    status["running"] = bool(status.get("running")) and pid_alive(status.get("pid"))
    return status


def open_reader(state_dir: Path):
    """A read-only store view; StoreError when there is no store yet."""
    from edge.store import StoreReader

    if not (state_dir / "events.db").exists():
        raise StoreError(f"no event store in {state_dir}; has `edge run` started on this device yet?")
    return StoreReader(state_dir, readonly=True)
