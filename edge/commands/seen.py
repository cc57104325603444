"""Replay protection: the ids of accepted commands, kept on disk until they expire.

A separate small SQLite file (state_dir/commands.db) so the event store's
schema stays its own. An id is claimed *before* the command runs and the claim
is fsync'd, so after a power cut a command is never executed twice: commands
are at-most-once, which is the right side to fail on for a gate.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from edge.errors import StoreError

DB_NAME = "commands.db"
_PRUNE_EVERY = 256


class SeenIds:
    """Command ids accepted by this device, each kept until its keep_until time."""

    def __init__(self, state_dir: Path, clock=time.time):
        self.path = Path(state_dir) / DB_NAME
        self._clock = clock
        self._claims = 0
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("CREATE TABLE IF NOT EXISTS seen_commands ("
                             " id TEXT PRIMARY KEY, keep_until REAL NOT NULL, first_seen REAL NOT NULL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS seen_commands_keep ON seen_commands(keep_until)")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the replay-protection database: {exc}") from None
        self.prune()

    def claim(self, command_id: str, keep_until: float) -> float | None:
        """Record ``command_id``; returns None when new, else the time it was first seen."""
        try:
            cur = self._db.execute("INSERT OR IGNORE INTO seen_commands VALUES (?, ?, ?)",
                                   (command_id, keep_until, self._clock()))
            if cur.rowcount == 1:
                self._claims += 1
                if self._claims % _PRUNE_EVERY == 0:
                    self.prune()
                return None
            row = self._db.execute("SELECT first_seen FROM seen_commands WHERE id = ?",
                                   (command_id,)).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: replay-protection database failed: {exc}") from None
        return row[0] if row else self._clock()

    def prune(self) -> int:
        """Forget ids whose command can no longer be accepted anyway (it has expired)."""
        try:
            return self._db.execute("DELETE FROM seen_commands WHERE keep_until < ?",
                                    (self._clock(),)).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: replay-protection database failed: {exc}") from None

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM seen_commands").fetchone()[0]

    def close(self) -> None:
        self._db.close()
