"""Keypad entry: keys typed at the reader become one PIN, held in memory only until checked.

The PIN never leaves this object: no event, no log, no command result carries
it. The gate checks it against the holder's PBKDF2 hash from the directory
(``check``), which also forgets it, as does the time-to-live.
"""

from __future__ import annotations

import hashlib
import hmac
import time

_CLEAR = {"*", "\x7f"}
_DIGITS = frozenset("0123456789")  # not str.isdigit: latin-1 "²" and "¹" are digits to it
_ENTER = {"\r"}


class PinPad:
    def __init__(self, terminator: str, max_digits: int, key_timeout_s: float, ttl_s: float):
        self._enter = _ENTER | {terminator}
        self._max, self._key_timeout, self._ttl = max_digits, key_timeout_s, ttl_s
        self._typing: list[str] = []
        self._last_key = 0.0
        self._held: str | None = None
        self._held_at = 0.0

    def keys(self, data: bytes, now: float | None = None) -> int | None:
        """Feed keys; the number of digits when a PIN was completed, else None."""
        now = time.monotonic() if now is None else now
        if self._typing and now - self._last_key > self._key_timeout:
            self._typing.clear()  # a pause too long: the person started again
        self._last_key = now
        done = None
        for ch in data.decode("latin-1"):
            if ch in self._enter:
                self._held, self._held_at, done = "".join(self._typing), now, len(self._typing)
                self._typing.clear()
            elif ch in _CLEAR:
                self._typing.clear()
            elif ch in _DIGITS and len(self._typing) < self._max:
                self._typing.append(ch)
        return done

    def check(self, salt: bytes, expected: bytes, iterations: int, now: float | None = None) -> tuple[bool, str]:
        """(match, detail) against PBKDF2-HMAC-SHA256(pin, salt, iterations); the PIN is forgotten."""
        now = time.monotonic() if now is None else now
        pin, at = self._held, self._held_at
        self._held = None
        if pin is None or now - at > self._ttl:
            return False, "no PIN entered (or it expired)"
        got = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations, dklen=len(expected))
        return hmac.compare_digest(got, expected), "compared"

    def forget_expired(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._held is not None and now - self._held_at > self._ttl:
            self._held = None


def pin_hash(pin: str, salt: bytes, iterations: int = 100_000) -> bytes:
    """What the directory stores for a holder's PIN (the same derivation ``check`` uses)."""
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, iterations)
