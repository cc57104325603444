"""The gate's own small SQLite (``state_dir/gate.db``): the mode, approaches not yet decided, PIN lockouts.

An approach row exists from its first step until its decision is stored, so
after a crash every row left is an approach that was cut short: the engine
records each as denied at start-up and deletes it. Nothing here is ever used
to resume an approach, so a crash can never end in a grant. Wrong-PIN counts
and lockouts (services.gate.pinlock) are kept here too, so a restart lifts none.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from edge.errors import StoreError
from edge.sqlite import open_db

FILE = "gate.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS mode (id INTEGER PRIMARY KEY CHECK (id = 1), mode TEXT NOT NULL,
                                 set_by TEXT, reason TEXT, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS approaches (id TEXT PRIMARY KEY, lane TEXT NOT NULL, state TEXT NOT NULL,
                                       body TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pin_lockouts (holder TEXT PRIMARY KEY, wrong INTEGER NOT NULL,
                                         until_wall REAL, until_up REAL, updated REAL NOT NULL);
"""


class GateState:
    """Mode and open approaches, durable before the engine acts on them. One writer (the engine)."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = open_db(self.path)  # synchronous FULL: a grant is only sent after its row is on disk
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"gate state {self.path}: {exc}; move the file aside to start afresh "
                             "(the mode falls back to [gate].initial_mode)") from None

    @classmethod
    def open(cls, state_dir: Path) -> tuple[GateState, str | None]:
        """The state, or a fresh one when the file is unreadable (kept aside; the problem returned).

        The gate must start whatever the file holds: a damaged file costs the saved mode
        and the record of approaches cut short, never the lane.
        """
        try:
            return cls(state_dir), None
        except StoreError as exc:
            path = Path(state_dir) / FILE
            aside = path.with_name(f"{FILE}.bad-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                try:
                    Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
                except FileNotFoundError:
                    pass
            return cls(state_dir), f"{exc} (moved to {aside.name})"

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"gate state {self.path}: {exc}") from None

    def mode(self) -> dict[str, Any] | None:
        rows = self._run("SELECT mode, set_by, reason, at FROM mode WHERE id = 1")
        if not rows:
            return None
        mode, set_by, reason, at = rows[0]
        return {"mode": mode, "set_by": set_by, "reason": reason, "at": at}

    def set_mode(self, mode: str, set_by: str | None, reason: str | None) -> None:
        self._run("INSERT INTO mode (id, mode, set_by, reason, at) VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) "
                  "DO UPDATE SET mode=excluded.mode, set_by=excluded.set_by, reason=excluded.reason, "
                  "at=excluded.at", (mode, set_by, reason, time.time()))

    def save(self, approach_id: str, lane: str, state: str, body: dict[str, Any]) -> None:
        self._run("INSERT INTO approaches (id, lane, state, body, updated) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT(id) DO UPDATE SET state=excluded.state, body=excluded.body, "
                  "updated=excluded.updated", (approach_id, lane, state, json.dumps(body), time.time()))

    def forget(self, approach_id: str) -> None:
        self._run("DELETE FROM approaches WHERE id = ?", (approach_id,))

    def unfinished(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, state, body) of every approach a crash or stop cut short, oldest first."""
        rows = self._run("SELECT id, state, body FROM approaches ORDER BY updated")
        return [(i, s, json.loads(b)) for i, s, b in rows]

    def pin_counts(self) -> list[tuple[str, int, float | None, float | None]]:
        """(holder, wrong PINs in a row, lockout end by wall clock, by uptime) of every counted holder."""
        return [(h, int(w), uw, uu) for h, w, uw, uu in
                self._run("SELECT holder, wrong, until_wall, until_up FROM pin_lockouts")]

    def set_pin_count(self, holder: str, wrong: int, until_wall: float | None, until_up: float | None) -> None:
        self._run("INSERT INTO pin_lockouts (holder, wrong, until_wall, until_up, updated) VALUES (?, ?, ?, ?, ?) "
                  "ON CONFLICT(holder) DO UPDATE SET wrong=excluded.wrong, until_wall=excluded.until_wall, "
                  "until_up=excluded.until_up, updated=excluded.updated",
                  (holder, wrong, until_wall, until_up, time.time()))

    def forget_pin_count(self, holder: str) -> None:
        self._run("DELETE FROM pin_lockouts WHERE holder = ?", (holder,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
