"""Replay protection: the ids of accepted commands, kept on disk until they expire — by two clocks.

A separate small SQLite file (state_dir/commands.db) so the event store's
schema stays its own. An id is claimed *before* the command runs and the claim
is fsync'd, so after a power cut a command is never executed twice: commands
are at-most-once, which is the right side to fail on for a gate.

The wall clock alone cannot be trusted (a dead RTC battery, a rogue NTP
answer). So the device also counts its own *uptime* (edge.uptime): seconds
since this boot of the daemon (monotonic) plus the uptime persisted by earlier
runs, kept here. Two rules follow:

- an id is forgotten only once its command has expired by the wall clock AND
  by the uptime bound (uptime at claim + the command's remaining validity), so
  a clock pushed forward frees nothing;
- a *time floor* (a wall time the device has seen, advanced by uptime since)
  is a lower bound of the real time; a command is expired when either the
  wall clock or the floor says so, so a clock set back revives nothing. A wall
  clock behind the floor by more than the skew is reported (``on_clock_back``).

The floor adopts the wall clock when the daemon starts and, while running,
only small forward steps (NTP slewing): a rogue clock pushed far ahead during
a run cannot drag the floor forward and lock every command out.

The file itself is not believed blindly either (defence in depth: writing it takes the
daemon's account or root). A value that cannot be true (not a number, NaN, infinite,
negative, an uptime of centuries, a floor taken at an uptime not reached yet, a floor
beyond 2100) is refused: an
uptime as 0 (ids are kept longer, the safe side), a floor as unknown (the wall clock is
kept). Each refusal is in ``refused`` for the caller to alarm, naming the file and value.
A floor ahead of the wall clock, by however much, is kept: that is what a clock set back
looks like (a dead RTC, a rogue NTP server), and the floor is what guards against it;
dropping a floor "too far ahead" would hand a rogue clock a way past it at the next start.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.errors import StoreError
from edge.sqlite import open_db
from edge.uptime import Clocks, Uptime, up_bound

DB_NAME = "commands.db"
_PRUNE_EVERY = 256
_MAX_UPTIME_S = 200 * 365.25 * 86400  # no device's daemon runs for centuries
_FLOOR_CEILING = 4_102_444_800.0  # 2100-01-01: no floor is beyond it while this software runs


def _number(meta: dict, key: str, refused: list[dict], path: Path) -> float | None:
    """``meta[key]`` as a finite, non-negative number; None (and a refusal) when it cannot be one."""
    raw = meta.get(key)
    if raw is None:
        return None  # never written (a new file): not a refusal
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and 0 <= value <= (_MAX_UPTIME_S if key != "floor_wall" else _FLOOR_CEILING):
        return value
    refused.append(_refusal(path, key, raw, "not a finite number in range (0 .. "
                            f"{_MAX_UPTIME_S if key != 'floor_wall' else _FLOOR_CEILING:.0f})"))
    return None


def _refusal(path: Path, key: str, raw, reason: str) -> dict:
    return {"path": str(path), "key": key, "value": repr(raw)[:64], "reason": reason}


class SeenIds:
    """Command ids accepted by this device, each kept until both clocks say it has expired."""

    def __init__(self, state_dir: Path, clock=time.time, *, mono=time.monotonic, skew_s: float = 120.0,
                 on_clock_back: Callable[[float, float], None] | None = None,
                 uptime: Callable[[], float] | None = None):
        """``uptime``: the daemon's (edge.uptime.Uptime, read from this file before it starts);
        without it, counted here from the persisted value with ``mono``."""
        self.path = Path(state_dir) / DB_NAME
        self._clock, self.skew_s = clock, skew_s
        self.on_clock_back = on_clock_back
        self._claims = 0
        self._behind = False
        self.refused: list[dict] = []  # meta values that cannot be true (see the module's docstring)
        self._floor_lock = threading.Lock()  # the commands worker and the gate (scan freshness) both ask
        try:
            self._db = open_db(self.path)
            self._schema()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the replay-protection database: {exc}") from None
        saved_up = _number(meta, "uptime_s", self.refused, self.path)
        self._uptime = uptime or Uptime(saved_up or 0.0, mono)
        wall = clock()
        self._floor = self._saved_floor(meta, wall)
        if self._floor is None or wall > self.floor():
            self._floor = (wall, self.uptime())  # at start, a later wall time is believed
        self._save_meta()
        self.prune()

    def _saved_floor(self, meta: dict, wall: float) -> tuple[float, float] | None:
        """The floor persisted, or None: none yet, or one that cannot be true (refused)."""
        floor_wall = _number(meta, "floor_wall", self.refused, self.path)
        at = _number(meta, "floor_uptime", self.refused, self.path)
        if floor_wall is None or at is None:
            return None
        up = self.uptime()
        if at > up:
            self.refused.append(_refusal(self.path, "floor_uptime", meta["floor_uptime"],
                                         f"taken at an uptime this device has not reached ({up:.0f} s)"))
            return None
        floor = floor_wall + (up - at)
        if floor > _FLOOR_CEILING:
            self.refused.append(_refusal(self.path, "floor_wall", meta["floor_wall"],
                                         f"a time floor of {floor:.0f}, beyond any real time (the wall "
                                         f"clock says {wall:.0f}); the wall clock is kept"))
            return None
        return floor_wall, at

    def _schema(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS seen_commands ("
                         " id TEXT PRIMARY KEY, keep_until REAL NOT NULL, first_seen REAL NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL)")
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(seen_commands)")]
        if "keep_until_up" not in columns:  # a database from before the uptime bound: keep its ids a day
            self._db.execute("ALTER TABLE seen_commands ADD COLUMN keep_until_up REAL NOT NULL DEFAULT 86400")
        self._db.execute("CREATE INDEX IF NOT EXISTS seen_commands_keep ON seen_commands(keep_until)")

    # -- the two clocks ---------------------------------------------------------------------

    def uptime(self) -> float:
        """Seconds this device's daemon has run, over all its runs (persisted)."""
        return self._uptime()

    def floor(self) -> float:
        """A wall time the real time cannot be before: last trusted wall time plus uptime since."""
        wall, at = self._floor
        return wall + (self.uptime() - at)

    def trusted_now(self, wall: float | None = None) -> float:
        """The time to judge expiry (and a scan's freshness) by: the later of the wall clock and the floor."""
        wall = self._clock() if wall is None else wall
        with self._floor_lock:
            floor = self.floor()
            if wall < floor - self.skew_s:
                report, self._behind = not self._behind, True
            else:
                report, self._behind = False, False
                if floor < wall <= floor + self.skew_s:
                    self._floor = (wall, self.uptime())  # ordinary NTP slewing
        if report and self.on_clock_back is not None:  # outside the lock: it records an alarm
            self.on_clock_back(wall, floor)
        return max(wall, floor)

    # -- ids ---------------------------------------------------------------------------------

    def claim(self, command_id: str, keep_until: float, wall: float | None = None) -> float | None:
        """Record ``command_id``; returns None when new, else the time it was first seen."""
        now = self.trusted_now(wall)
        keep_until_up = up_bound(keep_until, now, self.uptime())
        try:
            self._db.execute("BEGIN IMMEDIATE")  # the claim and the uptime: one fsync
            try:
                cur = self._db.execute("INSERT OR IGNORE INTO seen_commands (id, keep_until, first_seen, "
                                       "keep_until_up) VALUES (?, ?, ?, ?)",
                                       (command_id, keep_until, self._clock(), keep_until_up))
                if cur.rowcount == 1:
                    self._save_meta()
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
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
        """Forget ids whose command has expired by the wall clock and by the uptime bound."""
        try:
            self._save_meta()
            # Passed by both clocks (edge.uptime.Moment.passed, in SQL).
            return self._db.execute("DELETE FROM seen_commands WHERE keep_until < ? AND keep_until_up < ?",
                                    (self._clock(), self.uptime())).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: replay-protection database failed: {exc}") from None

    def _save_meta(self) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [("uptime_s", self.uptime()), ("floor_wall", self._floor[0]),
                              ("floor_uptime", self._floor[1])])

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM seen_commands").fetchone()[0]

    def close(self) -> None:
        try:
            self._save_meta()
        except sqlite3.Error:
            pass  # the uptime since the last claim is lost: the floor is lower, never wrong
        self._db.close()


def read_uptime(state_dir: Path) -> float:
    """The uptime the daemon last persisted (0 on a device that never ran one). While the daemon
    runs it lags by up to a minute (or what a kill -9 lost): a lower uptime keeps spans longer."""
    path = Path(state_dir) / DB_NAME
    if not path.exists():
        return 0.0
    try:
        db = open_db(path, readonly=True)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'uptime_s'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read the device's uptime: {exc}") from None
    if not row:
        return 0.0
    refused: list[dict] = []
    value = _number({"uptime_s": row[0]}, "uptime_s", refused, path)
    return 0.0 if value is None else value  # refused: 0 keeps every span longer (SeenIds alarms it)


def offline_clocks(state_dir: Path) -> Clocks:
    """The two clocks for a process beside the daemon (the CLI): the wall clock, and the uptime
    the daemon last persisted, counted on from there."""
    return Clocks(now=time.time, uptime=Uptime(read_uptime(state_dir)))
