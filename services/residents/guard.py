"""Wrong-PIN back-off and lockout, per pseudonym and per tablet, kept across restarts.

Every name is counted the same way whether or not it is in the directory, so
the answers (and their timing) tell a caller nothing about which pseudonyms
exist. Names are kept as salted hashes, not in clear. Only one PIN check runs
at a time (``begin``/``end``): parallel guesses are refused rather than
queued, which also bounds scrypt's memory to one check.

A failure is kept as a moment by two clocks (edge.uptime): the daemon's
trusted time and the device's persisted uptime. A back-off or a lockout ends
(and the tablet's quiet time passes) only when both say it has, so a clock
pushed forward lifts nothing early, and a lockout outlives a restart and a
power cut. It lasts at most ``lockout_s`` of the tablet running (uptime stands
still while it is off); kept counts are bounded by what the current uptime
allows when they are read, so a lost persisted uptime cannot hold them longer.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge import secrets
from edge._fs import atomic_write
from edge.uptime import Clocks, Moment
from services.residents.settings import ResidentSettings

log = structlog.get_logger("edge.residents")
_MAX_NAMES = 5000


@dataclass
class Verdict:
    wait_s: float          # > 0: refuse without checking the PIN, retry after this long
    locked: bool = False


class LoginGuard:
    def __init__(self, settings: ResidentSettings, path: Path, state_dir: Path, clocks: Clocks | None = None):
        """``clocks``: the daemon's (trusted time, uptime); without it, the wall clock and the uptime
        the daemon last persisted (edge.commands.seen.offline_clocks)."""
        self.s, self.path = settings, Path(path)
        if clocks is None:
            from edge.commands.seen import offline_clocks

            clocks = offline_clocks(state_dir)
        self._clocks = clocks
        self._salt = secrets.key(state_dir, "login.salt", 16)
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        # key -> [failures, last failure, locked until, last failure's uptime, locked until's uptime]
        self._names: dict[str, list[float]] = {}
        self._tablet = [0.0, 0.0, 0.0]             # [failures, last failure, its uptime]
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_bytes())
            self._names = {k: self._with_uptime([float(x) for x in v], 3) for k, v in doc["names"].items()}
            self._tablet = self._with_uptime([float(x) for x in doc["tablet"]], 2)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            # Unreadable counts must not become a free reset: lock the whole tablet for a while.
            log.error("residents_login_counts_unreadable", path=str(self.path), error=str(exc))
            now = self._clocks.moment()
            self._tablet = [float(self.s.tablet_free_failures + 30), now.wall, now.up]

    def _with_uptime(self, entry: list[float], walls: int) -> list[float]:
        """A kept count with believable uptimes: a count from before the uptime bound gets them as
        if the wall clock were right now; a last failure cannot be after the current uptime, nor a
        lockout end more than ``lockout_s`` after it (else the persisted uptime was lost)."""
        now = self._clocks.moment()
        if len(entry) == walls:
            entry += [self._clocks.until(wall).up for wall in entry[1:]]
        if len(entry) != 2 * walls - 1:
            raise ValueError(f"expected {2 * walls - 1} numbers, got {len(entry)}")
        entry[walls] = min(entry[walls], now.up)
        if walls == 3:
            entry[4] = min(entry[4], now.up + self.s.lockout_s)
        return entry

    def _save(self) -> None:
        doc = {"names": self._names, "tablet": self._tablet}
        atomic_write(self.path, json.dumps(doc).encode(), mode=0o600)

    def key(self, name: str) -> str:
        return hashlib.blake2b(name.encode(errors="replace"), key=self._salt, digest_size=16).hexdigest()

    def begin(self) -> bool:
        """Take the one PIN-check slot; False if another check is running."""
        return self._busy.acquire(blocking=False)

    def end(self) -> None:
        self._busy.release()

    def verdict(self, key: str) -> Verdict:
        """May ``key`` try a PIN now? Every wait ends only when both clocks say it has."""
        now, uptime = self._clocks.now(), self._clocks.uptime()
        s = self.s
        with self._lock:
            failures, last, locked_until, last_up, locked_up = self._names.get(key, [0.0] * 5)
            locked = Moment(locked_until, locked_up).remaining(now, uptime)
            if locked > 0:
                return Verdict(locked, locked=True)
            wait = 0.0
            if failures:
                backoff = self._backoff(failures)
                wait = Moment(last, last_up).plus(backoff).remaining(now, uptime)
            t_fail, t_last, t_up = self._tablet
            if Moment(t_last, t_up).plus(s.tablet_reset_s).passed(now, uptime):
                t_fail = 0.0
            extra = t_fail - s.tablet_free_failures
            if extra > 0:
                backoff = self._backoff(extra)
                wait = max(wait, Moment(t_last, t_up).plus(backoff).remaining(now, uptime))
            return Verdict(wait)

    def _backoff(self, failures: float) -> float:
        return min(self.s.backoff_base_s * 2 ** (failures - 1), self.s.backoff_max_s)

    def failure(self, key: str) -> tuple[int, float | None]:
        """Count one wrong PIN; returns (failures in a row, locked-until when this one locked it)."""
        now, uptime = self._clocks.now(), self._clocks.uptime()
        s = self.s
        with self._lock:
            entry = self._names.setdefault(key, [0.0] * 5)
            entry[0] += 1
            entry[1], entry[3] = now, uptime
            locked = None
            if entry[0] >= s.max_failures:
                locked = now + s.lockout_s
                entry[2], entry[4] = locked, uptime + s.lockout_s
            t_fail, t_last, t_up = self._tablet
            fresh = Moment(t_last, t_up).plus(s.tablet_reset_s).passed(now, uptime)
            self._tablet = [1.0 if fresh else t_fail + 1, now, uptime]
            if len(self._names) > _MAX_NAMES:  # forget the oldest names first, never a locked one
                for k, _ in sorted(self._names.items(), key=lambda kv: kv[1][1])[:len(self._names) - _MAX_NAMES]:
                    if Moment(self._names[k][2], self._names[k][4]).passed(now, uptime):
                        del self._names[k]
            self._save()
            return int(entry[0]), locked

    def success(self, key: str) -> None:
        with self._lock:
            if self._names.pop(key, None) is not None:
                self._save()

    def forget(self, key: str) -> None:
        """A PIN reset by central (a new verifier) clears that name's count and lockout."""
        self.success(key)
