"""The acceptance rules every command passes before anything runs.

Order matters: the schema first (so a result can name the command), then the
signature (an unauthenticated message learns nothing else about the device),
then audience, target, time window (shorter for barrier and erase commands),
the two-person rule, the target's own check of the name and arguments (the same
check, ``_check_args``, for central's commands and local ones), and the replay
claim last, so only a command that is about to run uses up its id. Signatures count only from keys holding the
``command`` role (edge.trust); how many are needed follows from the command's
effect class (edge.commands.effects), never from its name alone.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from edge.commands.approvals import Approvals, single_passage_problem
from edge.commands.effects import TWO_PERSON, Effects, effect_of
from edge.commands.model import EDGE_TARGET, MAX_COMMAND_BYTES, Command, iso
from edge.commands.seen import SeenIds
from edge.commands.settings import CommandsSettings
from edge.errors import CommandError
from edge.events import printable
from edge.trust import TrustRefused, TrustStore


class CommandRejected(CommandError):
    """A command failed an acceptance rule; it is never executed."""

    def __init__(self, reason: str, detail: str, doc: Mapping[str, Any] | None = None,
                 result: dict[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.result = reason, detail, result
        self.signed_by: list[str] = []  # the trusted keys that signed it, once known (accountability)
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
    effect: str = "barrier"
    approved_by: str | None = None  # the second local operator
    single_person: bool = False  # the site's one-person local override was used: raise an alarm


class Verifier:
    """Applies the rules for one device. Not thread-safe: the router's worker owns it."""

    def __init__(self, *, device: str, site: str, trust: TrustStore, clock_skew_s: float,
                 settings: CommandsSettings, targets: Mapping[str, Effects], seen: SeenIds,
                 clock=time.time, builtin_effects: Effects | None = None,
                 checks: Mapping[str, Callable[[str, dict], Any]] | None = None):
        from edge.commands.builtin import BUILTIN_EFFECTS

        self.device, self.site = device, site
        self.trust = trust
        self.skew_s = clock_skew_s
        self.settings = settings
        self.targets = {EDGE_TARGET: BUILTIN_EFFECTS if builtin_effects is None else builtin_effects, **targets}
        self.checks = dict(checks or {})  # target -> its argument check (Driver.check_command)
        self.seen = seen
        self._clock = clock
        self.approvals = Approvals(settings.local_approval_s)

    # -- remote (MQTT) ----------------------------------------------------------

    def remote(self, topic: str, payload: bytes, *, site_wide: bool) -> Accepted | None:
        """Accept a command from central; None when it is addressed to another device."""
        doc = _parse(payload)
        command = _validate(doc)
        if not self.trust.anchors:
            raise CommandRejected("bad_signature", "this device trusts no central key "
                                  "(set trust.central_keys); remote commands cannot be verified", doc)
        try:
            # Key expiry by the same clock as the command's validity: a clock set back revives no key.
            signed_by = self.trust.check(doc, "command", 1, now=self.seen.trusted_now(self._clock()))
        except TrustRefused as exc:
            raise CommandRejected(exc.problem, exc.detail, doc) from None
        if site_wide and not self._for_this_device_on_site_topic(command):
            return None
        try:
            self._check_audience(command, doc, site_wide)
            self._check_target(command, doc)
            effect = self.effect(command)
            self._check_bound(command, doc, effect)
            self._check_time(command, doc, effect)
            self._check_signers(command, doc, signed_by, effect)
            # After the signers: one stolen key learns nothing about which commands exist here.
            self._check_args(command, doc, "refused before it runs (its id is not used up)")
            self._claim(command, doc)
        except CommandRejected as rej:  # a refused command still says whose keys signed it
            rej.signed_by = list(signed_by)
            raise
        return Accepted(command, "mqtt", topic, signed_by, effect=effect)

    def _check_bound(self, command: Command, doc: Mapping, effect: str) -> None:
        # Two people sign a barrier or erase command for one device: signed for a whole site,
        # anyone on the broker could replay it to every device of the site (ids are per device).
        if command.device is None and self.required_signatures(command) > 1:
            raise CommandRejected("wrong_target", f"{command.target} {command.name!r} is a {effect} command "
                                  "signed for a whole site; two-person commands must name the one device "
                                  "they are for ('device'), or they could be replayed to every device of "
                                  "the site", doc)

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

    def _check_time(self, command: Command, doc: Mapping, effect: str) -> None:
        now = self.seen.trusted_now(self._clock())
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
        if effect in TWO_PERSON and expires - issued > self.settings.barrier_ttl_s:
            raise CommandRejected("ttl_too_long", f"a {effect} command valid for {expires - issued:.0f}s; "
                                  f"this device accepts at most {self.settings.barrier_ttl_s:g}s for "
                                  "barrier and erase commands (commands.barrier_ttl_s)", doc)

    def _check_target(self, command: Command, doc: Mapping) -> None:
        if command.target not in self.targets:
            known = ", ".join(sorted(self.targets))
            raise CommandRejected("wrong_target", f"no driver named {command.target!r} on this device; "
                                  f"targets here: {known}", doc)

    def _check_args(self, command: Command, doc: Mapping, refused: str) -> None:
        """``malformed`` for what the target would refuse whatever its state (an unknown name, a bad
        argument): central's commands and local ones alike, before they run or are held."""
        check = self.checks.get(command.target)
        if check is None:
            return
        try:
            check(command.name, dict(command.args))
        except CommandError as exc:
            raise CommandRejected("malformed", f"{command.target} {command.name!r} would fail ({exc}); "
                                  f"{refused}", doc) from None
        except Exception as exc:  # a plug-in's broken check: refuse the request, keep the worker
            raise CommandRejected("malformed", f"{command.target} {command.name!r}: the target's argument "
                                  f"check failed ({type(exc).__name__}: {str(exc)[:200]}); {refused}",
                                  doc) from None

    def effect(self, command: Command) -> str:
        """observe | operate | barrier | erase, as the target declares it (barrier when it does not)."""
        return effect_of(self.targets.get(command.target, {}), command.name, command.args)

    def required_signatures(self, command: Command) -> int:
        two = self.effect(command) in TWO_PERSON or command.name in self.settings.two_person
        return 2 if two else 1

    def _check_signers(self, command: Command, doc: Mapping, signed_by: list[str], effect: str) -> None:
        required = self.required_signatures(command)
        if len(signed_by) < required:
            raise CommandRejected("under_signed", f"{command.target} {command.name!r} is a {effect} command: "
                                  f"it needs {required} signatures from distinct keys holding the 'command' "
                                  f"role (two-person rule), has {len(signed_by)}", doc)

    def _claim(self, command: Command, doc: Mapping) -> None:
        keep_until = command.expires_at.timestamp() + self.skew_s
        first_seen = self.seen.claim(command.id, keep_until, self._clock())
        if first_seen is not None:
            when = iso(datetime.fromtimestamp(first_seen, UTC))
            raise CommandRejected("replay", f"id {command.id} was already accepted at {when}", doc)

    # -- local (control socket) -------------------------------------------------

    def local(self, request: Mapping[str, Any], operator: str, *, policy: bool = False) -> Accepted:
        """Accept a command from this device: the socket's file permissions authorise one operator.

        ``policy`` is True only for the gate policy engine's own driver commands (the
        outcome of a policy decision, not re-checked). Everyone else's barrier or erase
        command waits for a second operator (``approve``), or, where the site allows it,
        is a one-person single-passage override raised as an alarm.
        """
        if not isinstance(request, Mapping):
            raise CommandRejected("malformed", "a local request must be a JSON object")
        if "approve" in request:
            return self._approve(request.get("approve"), operator)
        doc = self._local_doc(request, request.get("id"))
        command = _validate(doc)
        self._check_target(command, doc)
        effect = self.effect(command)
        if policy:  # the gate policy's own feedback and grants: the policy is the authority
            self._claim(command, doc)
            return Accepted(command, "local", operator=operator, effect=effect)
        if self.required_signatures(command) < 2:
            self._check_args(command, doc, "refused before it runs")
            self._claim(command, doc)
            return Accepted(command, "local", operator=operator, effect=effect)
        self._check_args(command, doc, "refused before anyone is asked to approve it")
        if request.get("single_person") is True:
            return self._single_person(command, doc, operator, effect)
        pending = self.approvals.hold(request, operator)
        raise CommandRejected(
            "under_signed", f"{command.target} {command.name!r} is a {effect} command: it needs a second "
            f"operator. Another operator, logged in under their own account, approves it within "
            f"{self.settings.local_approval_s:g}s with: edge cmd approve {pending.id}", doc,
            result={"approval_id": pending.id, "requested_by": operator, "effect": effect,
                    "valid_s": self.settings.local_approval_s})

    def _local_doc(self, request: Mapping[str, Any], command_id: Any) -> dict[str, Any]:
        # Dated by the trusted time, as remote commands are judged: a driver refuses a command
        # that only gets its turn after expires_at by that time (edge.supervisor).
        now = datetime.fromtimestamp(self.seen.trusted_now(self._clock()), UTC)
        return {
            "id": command_id or f"local-{uuid.uuid4()}",
            "name": request.get("name"), "target": request.get("target"),
            "args": request.get("args") or {}, "reason": request.get("reason"),
            "device": self.device, "site": self.site, "issued_at": iso(now),
            "expires_at": iso(now + timedelta(seconds=self.settings.local_ttl_s)),
        }

    def _approve(self, approval_id: Any, operator: str) -> Accepted:
        pending, why = self.approvals.take(approval_id, operator)
        if why:
            # the refusal names the request when it waits (its requester asked to approve it)
            held = {k: pending.request.get(k) for k in ("target", "name")} if pending else {}
            raise CommandRejected("under_signed" if pending else "expired", why,
                                  {"id": approval_id if isinstance(approval_id, str) else None, **held})
        doc = self._local_doc(pending.request, pending.id)
        command = _validate(doc)
        self._check_target(command, doc)
        self._claim(command, doc)
        return Accepted(command, "local", operator=pending.operator, effect=self.effect(command),
                        approved_by=operator)

    def _single_person(self, command: Command, doc: Mapping, operator: str, effect: str) -> Accepted:
        if not self.settings.allow_single_person_override:
            raise CommandRejected("under_signed", "this site does not allow one-person overrides "
                                  "(commands.allow_single_person_override = false); ask a second operator "
                                  "to approve instead", doc)
        problem = single_passage_problem(command.name, command.args, command.reason)
        if problem is not None:
            raise CommandRejected("under_signed", problem, doc)
        self._claim(command, doc)
        return Accepted(command, "local", operator=operator, effect=effect, single_person=True)


def _parse(payload: bytes) -> Any:
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandRejected("malformed", f"{len(payload)} bytes; a command is at most "
                              f"{MAX_COMMAND_BYTES} bytes")
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5000-digit number, deep nesting
        raise CommandRejected("malformed", f"not valid JSON: {str(exc)[:120]}") from None


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
    return printable(value, 128) if isinstance(value, str) else None
