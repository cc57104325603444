"""Staff enrolment on the device: two operators, through the daemon's command target ``biometrics``.

A staff face is a standing pass (identify, then grant), so a local staff enrolment is a
barrier command like an unlock. `edge biometrics enroll --role staff` encodes the photos and
files ``biometrics enroll_staff`` on the control socket; the daemon holds it until a second
operator, under another account, runs `edge cmd approve ID` (edge.commands.approvals: the one
local two-person flow, the same as for a turnstile's unlock). Only then does the daemon write
the subject, recording both names; the enrolment is then reported to central and kept only
while central vouches for it, like every local one. Central enrols staff with gallery
documents signed by two gallery keys, never with this command.

The templates travel in the request's arguments; what a log would never show (edge.logs)
the pending list does not show either: the second operator sees the subject, the window,
the reason, how many templates and their hash.
"""

from __future__ import annotations

import base64
import binascii
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from drivers.camera.gallery import Gallery, GalleryError, Subject, templates_sha256
from edge.driver import parse_command_args
from edge.errors import CommandError

log = structlog.get_logger("edge.biometrics")

TARGET = "biometrics"
COMMAND = "enroll_staff"
#: A staff face opens the gate: two people, whoever asks.
EFFECTS = {COMMAND: "barrier"}
MAX_TEMPLATES = 20  # photos of one person; 20 templates fit a control-socket line many times over


class EnrollStaffArgs(BaseModel):
    """What `edge biometrics enroll --role staff` sends (and the second operator approves)."""

    model_config = ConfigDict(extra="forbid")
    subject_id: str = Field(min_length=1, max_length=128, description="Staff number.")
    templates: list[str] = Field(min_length=1, max_length=MAX_TEMPLATES,
                                 description="Base64 of each 512-byte encoding (128 float32, little-endian).")
    template_count: int = Field(ge=1, le=MAX_TEMPLATES, description="How many templates (shown to the "
                                "second operator; the templates themselves are not).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the templates in order "
                        "(the hash central vouches for).")
    reason: str = Field(min_length=3, max_length=500, description="Why this person is enrolled here "
                        "and not through central.")
    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None


def check(name: str, args: dict[str, Any]) -> tuple[Subject, str]:
    """The staff subject and its template hash; CommandError naming what is wrong, before a
    second operator is asked, and again before anything is written."""
    if name != COMMAND:
        raise CommandError(f"{TARGET} has no command {name!r}; it has: {COMMAND}")
    a = parse_command_args(EnrollStaffArgs, name, dict(args or {}))
    templates = [_template(raw, i) for i, raw in enumerate(a.templates)]
    if len(templates) != a.template_count:
        raise CommandError(f"{name}: template_count is {a.template_count} but {len(templates)} templates came")
    subject = Subject(a.subject_id, "staff", templates, _ts(a.valid_from), _ts(a.valid_until))
    try:
        subject.validate()
    except GalleryError as exc:
        raise CommandError(f"{name}: {exc}") from None
    digest = templates_sha256(templates)
    if digest != a.sha256:
        raise CommandError(f"{name}: sha256 {a.sha256} is not the hash of these templates ({digest})")
    return subject, digest


def _template(raw: str, i: int) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise CommandError(f"{COMMAND}: templates.{i}: not base64") from None


def _ts(when) -> float | None:
    return None if when is None else when.timestamp()


class StaffEnrolment:
    """Component ``biometrics``: the ``enroll_staff`` command target, run once two operators agreed."""

    name = TARGET

    def __init__(self, daemon, router):
        self._state_dir = Path(daemon.settings.state_dir)
        # The router's worker must not wait on the gallery's lock: writes run here, one at a time.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biometrics-enrol")
        self.enrolled = 0
        router.register_target(TARGET, self._submit, EFFECTS, check=check)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def status(self) -> dict[str, Any]:
        return {"status": "ok", "staff_enrolled": self.enrolled}

    def _submit(self, name: str, args: dict[str, Any], accepted) -> Future:
        try:
            return self._pool.submit(self._enrol, name, args, accepted)
        except RuntimeError:  # stopped: the daemon is shutting down (the router stops after us)
            refused: Future = Future()
            refused.set_exception(CommandError("the daemon is stopping; nothing was enrolled, ask again"))
            return refused

    def _enrol(self, name: str, args: dict[str, Any], accepted) -> dict[str, Any]:
        subject, digest = check(name, args)
        if accepted.origin != "local":
            raise CommandError("central enrolls staff with a gallery document signed by two gallery keys "
                               "(docs/gate.md); enroll_staff is for two operators on the device")
        if not accepted.approved_by or accepted.approved_by == accepted.operator:
            # The verifier holds every barrier command for a second operator; never one person here.
            raise CommandError("a staff enrolment needs a second operator's `edge cmd approve`")
        try:
            gallery = Gallery(self._state_dir)
            try:
                gallery.enroll_local(subject, accepted.operator, args["reason"], approved_by=accepted.approved_by)
            finally:
                gallery.close()
        except GalleryError as exc:
            raise CommandError(f"{name}: not enrolled: {exc}") from None
        self.enrolled += 1
        log.warning("staff_enrolled_locally", subject_id=subject.subject_id, operator=accepted.operator,
                    approved_by=accepted.approved_by, sha256=digest)
        return {"subject_id": subject.subject_id, "role": "staff", "templates": len(subject.templates),
                "template_sha256": digest, "operator": accepted.operator, "approved_by": accepted.approved_by,
                "state": "local-pending"}
