"""Resident sessions: opaque bearer tokens held only in this daemon's memory.

A token is 32 random bytes; only its SHA-256 is kept, so a memory dump of the
table does not hand out live tokens. Tokens never leave the tablet and are not
persisted: they are bound to this tablet (no other device knows them) and a
restart ends every session. A session ends after ``idle_timeout_s`` without a
request, on ``DELETE /v1/session``, or when the directory suspends, releases or
re-keys its resident.

Two bounds keep the table small without letting one resident log others out:
each resident holds at most ``per_resident`` sessions (their next login ends
their own least recently used one), and the tablet at most ``max_total``. A
login that would need the slot of another resident's live session is refused
(503 ``sessions_full``): evicting it would let whoever has one PIN, or a script
on the socket, end every other resident's session.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.localapi.server import ApiError, Request

_BEARER = {"WWW-Authenticate": 'Bearer realm="edge-tablet"'}


@dataclass
class Session:
    resident: str
    token_hash: str
    last_used: float
    pin_at: float


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode(errors="replace")).hexdigest()


class Sessions:
    def __init__(self, idle_s: float, fresh_pin_s: float, clock: Callable[[], float] = time.monotonic, *,
                 per_resident: int = 4, max_total: int = 256):
        self.idle_s, self.fresh_pin_s, self._clock = idle_s, fresh_pin_s, clock
        self.per_resident, self.max_total = per_resident, max_total
        self._lock = threading.Lock()
        self._by_hash: dict[str, Session] = {}

    def create(self, resident: str) -> str:
        """A new token for ``resident``; to make room it ends only their own oldest session.

        503 ``sessions_full`` when the tablet's bound is reached and none of them is this
        resident's. Called after the PIN matched, so only the PIN's holder learns it."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with self._lock:
            self._expire(now)
            own = [s for s in self._by_hash.values() if s.resident == resident]
            if own and (len(own) >= self.per_resident or len(self._by_hash) >= self.max_total):
                del self._by_hash[min(own, key=lambda s: s.last_used).token_hash]
            elif len(self._by_hash) >= self.max_total:
                raise self._full(now)
            self._by_hash[_hash(token)] = Session(resident, _hash(token), now, now)
        return token

    def _full(self, now: float) -> ApiError:
        soonest = min(s.last_used for s in self._by_hash.values()) + self.idle_s - now
        return ApiError(503, "sessions_full", f"this tablet already holds {self.max_total} sessions of other "
                        f"residents ([residents].max_sessions); none is ended for a new login: try again "
                        f"when one logs out or idles out", {"Retry-After": str(max(1, math.ceil(soonest)))})

    def _expire(self, now: float) -> None:
        for h in [h for h, s in self._by_hash.items() if now - s.last_used > self.idle_s]:
            del self._by_hash[h]

    @staticmethod
    def bearer(req: Request) -> str:
        header = req.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "login_required", "log in first (POST /v1/session) and send "
                           "'Authorization: Bearer <token>'", _BEARER)
        return token.strip()

    def current(self, req: Request) -> Session:
        """The session the request's bearer token names; 401 if none, unknown or idle too long."""
        token_hash = _hash(self.bearer(req))
        now = self._clock()
        with self._lock:
            session = self._by_hash.get(token_hash)
            if session is not None and now - session.last_used > self.idle_s:
                del self._by_hash[token_hash]
                session = None
            if session is None:
                raise ApiError(401, "session_expired", "this session has ended or expired; log in again "
                               "(POST /v1/session)", _BEARER)
            session.last_used = now
            return session

    def require_fresh_pin(self, session: Session) -> None:
        if self._clock() - session.pin_at > self.fresh_pin_s:
            raise ApiError(403, "pin_required", f"legal mail needs the PIN entered within the last "
                           f"{self.fresh_pin_s:g} s: log in again (POST /v1/session)")

    def pin_fresh_for(self, session: Session) -> float:
        """Seconds left before legal mail needs the PIN again (0 when it already does)."""
        return max(0.0, self.fresh_pin_s - (self._clock() - session.pin_at))

    def end(self, req: Request) -> bool:
        with self._lock:
            return self._by_hash.pop(_hash(self.bearer(req)), None) is not None

    def drop(self, keep: Callable[[str], bool]) -> int:
        """End every session whose resident ``keep`` says no to; returns how many ended."""
        with self._lock:
            gone = [h for h, s in self._by_hash.items() if not keep(s.resident)]
            for h in gone:
                del self._by_hash[h]
            return len(gone)

    def count(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._by_hash)
