"""Wrong-PIN back-off and lockout, per pseudonym and per tablet, kept across restarts.

Every name is counted the same way whether or not it is in the directory, so
the answers (and their timing) tell a caller nothing about which pseudonyms
exist. Names are kept as salted hashes, not in clear. Times are wall-clock
seconds because a lockout must outlive a restart (monotonic time does not).
Only one PIN check runs at a time (``begin``/``end``): parallel guesses are
refused rather than queued, which also bounds scrypt's memory to one check.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from edge import secrets
from edge._fs import atomic_write
from services.residents.settings import ResidentSettings

log = structlog.get_logger("edge.residents")
_MAX_NAMES = 5000


@dataclass
class Verdict:
    wait_s: float          # > 0: refuse without checking the PIN, retry after this long
    locked: bool = False


class LoginGuard:
    def __init__(self, settings: ResidentSettings, path: Path, state_dir: Path):
        self.s, self.path = settings, Path(path)
        self._salt = secrets.key(state_dir, "login.salt", 16)
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._names: dict[str, list[float]] = {}   # key -> [failures, last failure, locked until]
        self._tablet = [0.0, 0.0]                  # [failures, last failure]
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_bytes())
            self._names = {k: [float(x) for x in v] for k, v in doc["names"].items()}
            self._tablet = [float(x) for x in doc["tablet"]]
        except (ValueError, KeyError, TypeError) as exc:
            # Unreadable counts must not become a free reset: lock the whole tablet for a while.
            log.error("residents_login_counts_unreadable", path=str(self.path), error=str(exc))
            self._tablet = [float(self.s.tablet_free_failures + 30), time.time()]

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

    def verdict(self, key: str, now: float | None = None) -> Verdict:
        now = time.time() if now is None else now
        with self._lock:
            failures, last, locked_until = self._names.get(key, [0.0, 0.0, 0.0])
            if locked_until > now:
                return Verdict(locked_until - now, locked=True)
            wait = last + self._backoff(failures) - now if failures else 0.0
            t_fail, t_last = self._tablet
            if now - t_last > self.s.tablet_reset_s:
                t_fail = 0.0
            extra = t_fail - self.s.tablet_free_failures
            if extra > 0:
                wait = max(wait, t_last + self._backoff(extra) - now)
            return Verdict(max(0.0, wait))

    def _backoff(self, failures: float) -> float:
        return min(self.s.backoff_base_s * 2 ** (failures - 1), self.s.backoff_max_s)

    def failure(self, key: str, now: float | None = None) -> tuple[int, float | None]:
        """Count one wrong PIN; returns (failures in a row, locked-until when this one locked it)."""
        now = time.time() if now is None else now
        with self._lock:
            entry = self._names.setdefault(key, [0.0, 0.0, 0.0])
            entry[0] += 1
            entry[1] = now
            locked = None
            if entry[0] >= self.s.max_failures:
                entry[2] = locked = now + self.s.lockout_s
            fresh = now - self._tablet[1] > self.s.tablet_reset_s
            self._tablet = [1.0 if fresh else self._tablet[0] + 1, now]
            if len(self._names) > _MAX_NAMES:  # forget the oldest names first, never a locked one
                for k, _ in sorted(self._names.items(), key=lambda kv: kv[1][1])[:len(self._names) - _MAX_NAMES]:
                    if self._names[k][2] <= now:
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
