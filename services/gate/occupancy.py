"""Who is in which zone, since when: the roll-call the gate answers offline.

The ledger of record is the event store: every counted move is a
``gate.occupancy`` event (durable before anyone relies on it, and synced to
central like any event). ``gate-occupancy.db`` holds the current position of
each person and the ``seq`` of the last event folded in; at start, and for
``edge gate count``, the events after it are folded in again, so a kill -9
between the two writes loses nothing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from edge.errors import StoreError
from edge.sqlite import open_db

FILE = "gate-occupancy.db"
EVENT = "gate.occupancy"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS position (person TEXT PRIMARY KEY, zone TEXT NOT NULL, since TEXT NOT NULL,
                                     lane TEXT, approach_id TEXT, role TEXT);
CREATE TABLE IF NOT EXISTS folded (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
"""


def _events_after(state_dir: Path, seq: int) -> list[tuple[int, dict[str, Any]]]:
    """(seq, payload) of every gate.occupancy event in the store after ``seq``, in order."""
    from edge.store import StoreReader

    if not (Path(state_dir) / "events.db").exists():
        return []
    reader = StoreReader(state_dir)
    out: list[tuple[int, dict[str, Any]]] = []
    try:
        while True:
            rows = reader.tail(1000, type_glob=EVENT, after_seq=seq)
            if not rows:
                return out
            for row_seq, body, _acked in rows:
                out.append((row_seq, json.loads(body)["payload"]))
                seq = row_seq
    except sqlite3.Error as exc:
        raise StoreError(f"reading {EVENT} events from the store: {exc}") from None
    finally:
        reader.close()


class Occupancy:
    """The current position of every person the gate has counted; one writer (the gate engine)."""

    def __init__(self, state_dir: Path, *, readonly: bool = False):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / FILE
        self._lock = threading.Lock()
        self._where: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self._db: sqlite3.Connection | None = None
        try:
            if not readonly:
                self._db = open_db(self.path)
                self._db.executescript(_SCHEMA)
                self._read(self._db)
            elif self.path.exists():
                db = open_db(self.path, readonly=True)
                try:
                    self._read(db)
                finally:
                    db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"occupancy ledger {self.path}: {exc}") from None

    def _read(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT seq FROM folded WHERE id = 1").fetchone()
        self.seq = row[0] if row else 0
        for person, zone, since, lane, approach_id, role in db.execute(
                "SELECT person, zone, since, lane, approach_id, role FROM position"):
            self._where[person] = {"zone": zone, "since": since, "lane": lane, "approach_id": approach_id,
                                   "role": role}

    def catch_up(self) -> int:
        """Fold in the store's gate.occupancy events this ledger has not seen; how many."""
        events = _events_after(self.state_dir, self.seq)
        for seq, payload in events:
            self.fold(seq, payload)
        return len(events)

    def fold(self, seq: int, p: dict[str, Any]) -> None:
        """Apply one stored gate.occupancy event (idempotent: an older seq is ignored)."""
        if seq <= self.seq:
            return
        pos = {"zone": p["to_zone"], "since": p["at"], "lane": p.get("lane"),
               "approach_id": p.get("approach_id"), "role": p.get("role")}
        with self._lock:
            self._where[p["person"]] = pos
            self.seq = seq
            if self._db is not None:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute("INSERT OR REPLACE INTO position VALUES (?, ?, ?, ?, ?, ?)",
                                     (p["person"], pos["zone"], pos["since"], pos["lane"], pos["approach_id"],
                                      pos["role"]))
                    self._db.execute("INSERT OR REPLACE INTO folded (id, seq) VALUES (1, ?)", (seq,))
                    self._db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"occupancy ledger {self.path}: {exc}") from None

    def zone_of(self, person: str) -> dict[str, Any] | None:
        with self._lock:
            pos = self._where.get(person)
            return dict(pos) if pos else None

    def count(self, zones: list[str]) -> dict[str, Any]:
        """Occupancy per zone and the people in each (the roll-call), as of the last folded event."""
        with self._lock:
            people = sorted(({"person": k, **v} for k, v in self._where.items()),
                            key=lambda x: (x["zone"], x["person"]))
        per_zone = dict.fromkeys(zones, 0)
        for person in people:
            per_zone[person["zone"]] = per_zone.get(person["zone"], 0) + 1
        return {"zones": per_zone, "people": people, "as_of_seq": self.seq}

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
