"""Resident login as a tablet component: holds the directory, checks PINs, hands out sessions.

Login, in this order (each step the same for every pseudonym, known or not):
1. one PIN check at a time on the tablet (a parallel try is told to wait);
2. back-off or lockout of that pseudonym or of the whole tablet -> 429, no check;
3. the scrypt check, against the resident's verifier or a decoy of the same cost;
4. only an ``active`` resident whose PIN matched gets a session (ending, if it must,
   only an older session of their own; 503 when the tablet is full of others'); anything
   else is one uniform 401, and counts as a failure; the N-th failure in a row locks the
   name out and emits a ``resident.lockout`` alarm;
5. every checked answer takes at least ``min_answer_s``.
"""

from __future__ import annotations

import math
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import structlog

from edge import sealing
from edge._fs import atomic_write
from edge.localapi.server import ApiError
from edge.mqtt import topics
from edge.schema import PSEUDONYM
from edge.trust import daemon_keys_for, watch_revocations
from services.residents.directory import (
    DIRECTORY_ROLE,
    DirectoryDoc,
    DirectoryRefused,
    ResidentEntry,
    decoy_verifier,
    parse_directory,
)
from services.residents.guard import LoginGuard
from services.residents.sessions import Sessions

log = structlog.get_logger("edge.residents")
_FAILED = "pseudonym or PIN not accepted"


def directory_topic(site: str, device: str) -> str:
    return f"{topics.device_prefix(site, device)}/residents/directory"


class ResidentsComponent:
    name = "residents"

    def __init__(self, daemon):
        s = daemon.settings
        self.daemon, self.settings = daemon, s.residents
        self.site, self.device = s.site, s.device_id
        root = s.state_dir / "residents"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._saved = root / "directory.json"
        # Only keys holding the directory role (edge.trust, issue 16) may sign a directory.
        self.trusted = daemon_keys_for(daemon, DIRECTORY_ROLE)
        # The daemon's clocks (trusted time, uptime): a clock pushed forward lifts no lockout.
        self.guard = LoginGuard(s.residents, root / "logins.json", s.state_dir,
                                clocks=getattr(daemon, "clocks", None))
        self.sessions = Sessions(s.residents.idle_timeout_s, s.residents.fresh_pin_s,
                                 per_resident=s.residents.max_sessions_per_resident,
                                 max_total=s.residents.max_sessions)
        self.device_key = sealing.device_key(s.state_dir)
        self._lock = threading.Lock()
        self._entries: dict[str, ResidentEntry] = {}
        self._version = 0
        self._decoy = decoy_verifier(None)
        self.refused = 0
        self.last_refusal: str | None = None
        self._verify_held()
        watch_revocations(daemon, self._verify_held)  # paho's thread, like every directory
        if daemon.link is not None:
            daemon.link.subscribe(directory_topic(self.site, self.device), self._on_directory, qos=1)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    # -- the directory ----------------------------------------------------------

    def _verify_held(self) -> None:
        """The kept directory, checked against the trust store as it is now: at start (whoever can
        write the state folder must not add residents) and after each revocation (a directory
        signed by a key revoked since must not stay in use, nor its version stay the floor)."""
        if not self._saved.exists():
            return
        try:
            doc = parse_directory(self._saved.read_bytes(), self.trusted, self.site, self.device)
        except DirectoryRefused as exc:
            self._drop(str(exc))
            return
        self._apply(doc)  # at start it is taken up; later it is the one held (same version): no change

    def _drop(self, reason: str) -> None:
        """Fail closed: no directory, so no resident logs in, until central's next one (any version)."""
        with self._lock:
            held, self._entries, self._version = self._version, {}, 0
        self._saved.replace(self._saved.with_suffix(".dropped.json"))  # kept for whoever investigates
        ended = self.sessions.drop(lambda name: False)
        why = f"the held directory (version {held or 'from disk'}) no longer verifies and was dropped; " \
              f"no resident can log in until central sends a new one: {reason}"
        self.refused += 1
        self.last_refusal = why
        log.error("residents_held_directory_dropped", version=held, sessions_ended=ended, reason=reason)
        self.daemon.emit("resident.directory_refused", {"reason": why}, "alarm", "residents")
        self.daemon.notify_health_changed()

    def _on_directory(self, topic_: str, payload: bytes, props) -> None:
        try:  # sealed: PIN verifiers on the broker would invite an offline PIN search
            raw = sealing.unseal(bytes(payload), self.device_key, self.device, "residents.directory")
            doc = parse_directory(raw, self.trusted, self.site, self.device)
        except (DirectoryRefused, sealing.SealError) as exc:
            self.refused += 1
            self.last_refusal = str(exc)
            log.error("residents_directory_refused", reason=str(exc))
            self.daemon.emit("resident.directory_refused", {"reason": str(exc)}, "alarm", "residents")
            return
        if doc.version > self._version:  # kept before it is applied: a restart finds what was in use
            atomic_write(self._saved, raw, mode=0o600)
            self._apply(doc)
            self.daemon.notify_health_changed()  # status.json shows the new directory version at once

    def _apply(self, doc: DirectoryDoc) -> bool:
        with self._lock:
            if doc.version <= self._version:
                return False
            old = self._entries
            self._entries = {r.pseudonym: r for r in doc.residents}
            self._version = doc.version
            self._decoy = decoy_verifier(doc.residents[0].verifier if doc.residents else None)
        for name, entry in old.items():
            new = self._entries.get(name)
            if new is None or new.verifier != entry.verifier:
                self.guard.forget(self.guard.key(name))  # a PIN reset ends the lockout
        ended = self.sessions.drop(self.is_active_unchanged(old))
        log.info("residents_directory_applied", version=doc.version, residents=len(doc.residents),
                 sessions_ended=ended)
        return True

    def is_active_unchanged(self, old: dict[str, ResidentEntry]):
        def keep(name: str) -> bool:
            new = self._entries.get(name)
            return bool(new and new.status == "active" and old.get(name) and old[name].verifier == new.verifier)
        return keep

    def purged(self, resident: str) -> None:
        self.sessions.drop(lambda name: name != resident)

    # -- login --------------------------------------------------------------------

    def login(self, pseudonym: Any, pin: Any) -> tuple[str, str]:
        """(token, resident) or ApiError: 400 malformed, 429 wait, 401 not accepted."""
        if not isinstance(pseudonym, str) or not isinstance(pin, str) or not 1 <= len(pin) <= 64 \
                or len(pseudonym) > 256:
            raise ApiError(400, "bad_request", 'expected {"pseudonym": text, "pin": text of 1 to 64 characters}')
        if not self.guard.begin():
            raise ApiError(429, "try_later", "another login is being checked; try again", {"Retry-After": "1"})
        try:
            return self._check(pseudonym, pin)
        finally:
            self.guard.end()

    def _check(self, pseudonym: str, pin: str) -> tuple[str, str]:
        key = self.guard.key(pseudonym)
        verdict = self.guard.verdict(key)
        if verdict.wait_s > 0:
            raise ApiError(429, "try_later", "too many wrong PINs; wait before trying again",
                           {"Retry-After": str(math.ceil(verdict.wait_s))})
        started = time.monotonic()
        with self._lock:
            entry = self._entries.get(pseudonym)
            verifier = entry.verifier if entry else self._decoy
        ok = verifier.matches(pin) and entry is not None and entry.status == "active"
        if not ok:
            failures, locked_until = self.guard.failure(key)
            if locked_until is not None:
                self._lockout(pseudonym, entry is not None, failures, locked_until)
        time.sleep(max(0.0, self.settings.min_answer_s - (time.monotonic() - started)))
        if not ok:
            raise ApiError(401, "login_failed", _FAILED)
        self.guard.success(key)
        try:
            token = self.sessions.create(pseudonym)
        except ApiError:
            log.warning("resident_sessions_full", max_sessions=self.settings.max_sessions)
            raise
        log.info("resident_login")
        return token, pseudonym

    def _lockout(self, pseudonym: str, known: bool, failures: int, until: float) -> None:
        name = pseudonym if re.fullmatch(PSEUDONYM, pseudonym) else None
        log.warning("resident_lockout", known=known, failures=failures)
        self.daemon.emit("resident.lockout", {
            "pseudonym": name, "known": known, "failures": failures,
            "locked_until": datetime.fromtimestamp(until, UTC).isoformat()}, "alarm", "residents")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"directory_version": self._version, "residents": len(self._entries),
                    "sessions": self.sessions.count(), "refused": self.refused}
