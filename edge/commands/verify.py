"""The acceptance rules every command passes before anything runs.

Order matters: the schema first (so a result can name the command), then the
signature (an unauthenticated message learns nothing else about the device),
then audience, time window, target and two-person rule, and the replay claim
last, so only a command that is about to run uses up its id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from edge.commands.model import EDGE_TARGET, MAX_COMMAND_BYTES, Command, iso
from edge.commands.seen import SeenIds
from edge.commands.settings import CommandsSettings
from edge.errors import CommandError
from edge.signing import SignatureError, verify


class CommandRejected(CommandError):
    """A command failed an acceptance rule; it is never executed."""

    def __init__(self, reason: str, detail: str, doc: Mapping[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        doc = doc if isinstance(doc, Mapping) else {}
        self.id = _str_or_none(doc.get("id"))
        self.name = _str_or_none(doc.get("name"))
        self.target = _str_or_none(doc.get("target"))


@dataclass(frozen=True)
class Accepted:
    """A command that passed every rule and whose id is now claimed."""

    command: Command
    origin: str  # mqtt | local
    topic: str | None = None
    signed_by: list[str] = field(default_factory=list)
    operator: str | None = None


class Verifier:
    """Applies the rules for one device. Not thread-safe: the router's worker owns it."""

    def __init__(self, *, device: str, site: str, trusted: Mapping[str, Any], clock_skew_s: float,
                 settings: CommandsSettings, targets: Mapping[str, frozenset[str]], seen: SeenIds,
                 clock=time.time):
        self.device, self.site = device, site
        self.trusted = dict(trusted)
        self.skew_s = clock_skew_s
        self.settings = settings
        self.targets = {EDGE_TARGET: frozenset(), **targets}
        self.seen = seen
        self._clock = clock

    # -- remote (MQTT) ----------------------------------------------------------

    def remote(self, topic: str, payload: bytes, *, site_wide: bool) -> Accepted | None:
        """Accept a command from central; None when it is addressed to another device."""
        doc = _parse(payload)
        command = _validate(doc)
        if not self.trusted:
            raise CommandRejected("bad_signature", "this device trusts no central key "
                                  "(set trust.central_keys); remote commands cannot be verified", doc)
        try:
            signed_by = verify(doc, self.trusted, 1)
        except SignatureError as exc:
            raise CommandRejected("bad_signature", str(exc), doc) from None
        if site_wide and not self._for_this_device_on_site_topic(command):
            return None
        self._check_audience(command, doc, site_wide)
        self._check_time(command, doc)
        self._check_target(command, doc)
        self._check_signers(command, doc, signed_by)
        self._claim(command, doc)
        return Accepted(command, "mqtt", topic, signed_by)

    def _for_this_device_on_site_topic(self, command: Command) -> bool:
        # A site-wide broadcast for another device, or for a driver this device does
        # not have, is simply not ours: answering it would make every device alarm.
        if command.device is not None and command.device != self.device:
            return False
        return command.target in self.targets

    def _check_audience(self, command: Command, doc: Mapping, site_wide: bool) -> None:
        if command.device is not None and command.device != self.device:
            raise CommandRejected("wrong_target", f"command is for device {command.device!r}, "
                                  f"this is {self.device!r}", doc)
        if command.site is not None and command.site != self.site:
            raise CommandRejected("wrong_target", f"command is for site {command.site!r}, "
                                  f"this device is at {self.site!r}", doc)
        if command.device is None and command.site is None:
            # Unbound commands could be replayed from one device or site to another.
            raise CommandRejected("wrong_target", "command names neither 'device' nor 'site'; "
                                  "sign it for one device or one site", doc)

    def _check_time(self, command: Command, doc: Mapping) -> None:
        now = self._clock()
        issued, expires = command.issued_at.timestamp(), command.expires_at.timestamp()
        clock_note = f"device clock says {iso(datetime.fromtimestamp(now, UTC))} (check NTP: edge doctor)"
        if expires <= issued:
            raise CommandRejected("malformed", "expires_at is not after issued_at", doc)
        if now > expires:
            raise CommandRejected("expired", f"expired at {iso(command.expires_at)}; {clock_note}", doc)
        if issued > now + self.skew_s:
            raise CommandRejected("not_yet_valid", f"issued_at {iso(command.issued_at)} is more than "
                                  f"{self.skew_s:g}s in the future; {clock_note}", doc)
        if expires - issued > self.settings.max_ttl_s:
            raise CommandRejected("ttl_too_long", f"valid for {expires - issued:.0f}s; this device "
                                  f"accepts at most {self.settings.max_ttl_s:g}s (commands.max_ttl_s)", doc)

    def _check_target(self, command: Command, doc: Mapping) -> None:
        if command.target not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise CommandRejected("wrong_target", f"no driver named {command.target!r} on this device; "
                                  f"targets here: {known}", doc)

    def required_signatures(self, command: Command) -> int:
        physical = self.targets.get(command.target, frozenset())
        two = command.name in self.settings.two_person or (
            self.settings.two_person_physical and command.name in physical)
        return 2 if two else 1

    def _check_signers(self, command: Command, doc: Mapping, signed_by: list[str]) -> None:
        required = self.required_signatures(command)
        if len(signed_by) < required:
            raise CommandRejected("under_signed", f"{command.name!r} needs {required} signatures from "
                                  f"distinct trusted keys (two-person rule), has {len(signed_by)}", doc)

    def _claim(self, command: Command, doc: Mapping) -> None:
        keep_until = command.expires_at.timestamp() + self.skew_s
        first_seen = self.seen.claim(command.id, keep_until)
        if first_seen is not None:
            when = iso(datetime.fromtimestamp(first_seen, UTC))
            raise CommandRejected("replay", f"id {command.id} was already accepted at {when}", doc)

    # -- local (control socket) -------------------------------------------------

    def local(self, request: Mapping[str, Any], operator: str) -> Accepted:
        """Accept a command from the local socket: authorised by its file permissions."""
        if not isinstance(request, Mapping):
            raise CommandRejected("malformed", "a local request must be a JSON object")
        now = datetime.fromtimestamp(self._clock(), UTC)
        doc = {
            "id": request.get("id") or f"local-{uuid.uuid4()}",
            "name": request.get("name"), "target": request.get("target"),
            "args": request.get("args") or {}, "reason": request.get("reason"),
            "device": self.device, "site": self.site, "issued_at": iso(now),
            "expires_at": iso(now + timedelta(seconds=self.settings.local_ttl_s)),
        }
        command = _validate(doc)
        self._check_target(command, doc)
        self._claim(command, doc)
        return Accepted(command, "local", operator=operator)


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected("malformed", f"{len(payload)} bytes; a command is at most "
                              f"{MAX_COMMAND_BYTES} bytes")
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandRejected("malformed", f"not valid JSON: {exc}") from None


def _validate(doc: Any) -> Command:
    if not isinstance(doc, dict):
        raise CommandRejected("malformed", f"expected a JSON object, got {type(doc).__name__}")
    try:
        return Command.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()[:5])
        raise CommandRejected("malformed", f"not a valid command: {problems}", doc) from None


def _str_or_none(value: Any) -> str | None:
    return value[:128] if isinstance(value, str) else None
