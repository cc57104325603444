"""Payloads of the ``gate.*`` events, as central receives them (published in docs/asyncapi.json).

The gate tests validate every gate event they see against these models, so
the document cannot drift from what the engine emits. Evidence is a list of
event ids of this device (``biometric.*``, ``gate.dose_check``, ``xray.scan``,
``command.result``, ``turnstile.granted``): central joins them by ``id``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["normal", "lockdown", "free_passage", "out_of_service"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class StepTaken(_Strict):
    kind: Literal["verify", "identify", "dose_check", "xray", "grant", "card", "pin", "face"]
    result: Literal["pending", "ok", "failed", "timeout", "skipped"] = Field(
        description="skipped: the approach was decided (override, mode, stop) before the step ended.")
    evidence: list[str] = Field(description="Ids of the events that prove the result.")
    detail: str
    command_id: str | None = Field(description="The driver command this step sent (verify, grant).")
    started_at: datetime
    ended_at: datetime | None


class Override(_Strict):
    operator: str = Field(description="Local user name (SO_PEERCRED), or central:<key ids> when signed.")
    reason: str
    origin: Literal["mqtt", "local"]
    command_id: str


class GateDecision(_Strict):
    """gate.decision: a grant, a denial or a hold of one person at one lane, with its evidence chain.

    Priority alarm for a hold (an officer must come) and for a denial whose step says
    ``on_fail = "alarm"``. A hold is followed by a second decision (override or hold_timeout)
    with the same ``approach_id``.
    """

    approach_id: str
    lane: str
    direction: Literal["in", "out"]
    role: Literal["visitor", "staff", "any", "officer", "card"]
    subject: str | None
    booking_id: str | None
    started_by: Literal["present", "camera", "override", "reader"] | None
    started_at: datetime | None
    decided_at: datetime
    outcome: Literal["grant", "deny", "hold"]
    reason: str = Field(description="flow_complete, officer_override, free_passage, face_not_verified, "
                                    "liveness_failed, multiple_faces, dose_limit, dose_check_unavailable, scan_not_clear, scan_stale, scan_wrong_lane, step_timeout, "
                                    "camera_unavailable, turnstile_refused, grant_unconfirmed, hold_timeout, "
                                    "lockdown, out_of_service, emergency, interrupted, stopping, card_unreadable, "
                                    "unknown_credential, no_pin_enrolled, pin_wrong, pin_locked, "
                                    "pin_check_busy, reader_unavailable, anti_passback.")
    detail: str
    mode: Mode
    online: bool = Field(description="The MQTT link was connected when the decision was taken.")
    steps: list[StepTaken]
    evidence: list[str] = Field(description="Every step's evidence, in step order.")
    override: Override | None
    duration_ms: float | None = Field(default=None, description="From the start of the approach.")


class GatePassage(_Strict):
    """gate.passage: after a grant, whether the person went through (turnstile.passage) or not."""

    approach_id: str
    lane: str
    direction: Literal["in", "out"]
    passed: bool
    evidence: list[str]
    detail: str


class GateDoseCheck(_Strict):
    """gate.dose_check: the dose ledger's answer for the person about to be scanned."""

    approach_id: str
    lane: str
    subject: str
    allowed: bool
    total_usv: float
    limit_usv: float
    warning_usv: float
    remaining_usv: float
    warning: bool
    window_start: datetime
    reason: str
    decided: bool = Field(default=True, description="False: the dose ledger could not answer (it was "
                          "down), so the scan is refused without a total.")


class GateEmergency(_Strict):
    """gate.emergency (alarm): a lane's fire-alarm free swing started or ended; recorded only."""

    lane: str
    active: bool
    mode: Mode
    evidence: list[str]
    online: bool
    detail: str


class LaneModeResult(_Strict):
    command: str
    status: str | None
    detail: str | None
    emergency: bool


class GateMode(_Strict):
    """gate.mode: the gate's mode was set (central's signed command, or a supervisor on site)."""

    mode: Mode
    previous: Mode
    set_by: str
    reason: str | None
    command_id: str | None
    online: bool
    lanes: dict[str, LaneModeResult] = Field(description="What each lane's turnstile answered.")


class GateStateLost(_Strict):
    """gate.state_lost (alarm): gate.db was unreadable at start and set aside; mode back to initial_mode."""

    problem: str
    mode: Mode
    detail: str


class GateOccupancy(_Strict):
    """gate.occupancy: a counted person moved from one zone to another (the roll-call's ledger)."""

    person: str = Field(description="The subject of the approach (card holder, visitor, staff member).")
    role: str
    lane: str
    direction: Literal["in", "out"]
    from_zone: str
    to_zone: str
    approach_id: str
    at: datetime
    evidence: list[str] = Field(description="The turnstile.passage event.")


class GateAntiPassback(_Strict):
    """gate.anti_passback (alarm): a person used a lane from a zone they are not recorded in.

    ``action: deny`` (hard anti-passback: the approach is denied) or ``grant`` (soft: the flow goes on).
    """

    approach_id: str
    lane: str
    person: str
    direction: Literal["in", "out"]
    expected_zone: str
    recorded_zone: str
    recorded_since: datetime
    action: Literal["deny", "grant"]


class GateDirectory(_Strict):
    """gate.directory_applied / gate.directory_rejected (alarm): a credential directory from central."""

    issued_at: datetime | None
    holders: int | None
    problem: str | None = Field(description="Why it was refused: signature, wrong_type, schema, wrong_site, "
                                            "not_newer, too_big, ...")
    detail: str


class GatePinLockout(_Strict):
    """gate.pin_lockout (alarm): a card holder's ``max_wrong_pins``-th wrong PIN in a row locked their card
    out at this gate (denied ``pin_locked`` without a PIN check until both clocks pass ``locked_until``);
    gate.pin_lockout_cleared: two operators ended a lockout (or reset the count) early."""

    holder: str = Field(description="The directory holder's id.")
    wrong_pins: int = Field(ge=0, description="Wrong PINs in a row (when cleared: the count that was cleared).")
    lane: str | None = Field(description="Where the last wrong PIN was typed (lockout).")
    approach_id: str | None
    lockout_s: float | None
    locked_until: datetime | None = Field(description="By the trusted time; the device's uptime must also "
                                                      "have run lockout_s.")
    evidence: list[str] = Field(description="reader.pin_entered and the check_pin command.result.")
    operator: str | None = Field(description="Cleared: who asked (a local user, or central:<key ids>).")
    approved_by: str | None = Field(description="Cleared on the device: the second local operator.")
    reason: str | None
    command_id: str | None
    detail: str


class GateSwapSuspected(_Strict):
    """gate.swap_suspected (alarm): a visitor's face is not the face verified at their entry: at the
    exit, or at a second entry on the same booking (whose entry face is never replaced).

    The lane is held for an officer (a gate.decision ``hold`` follows); nothing is granted.
    """

    approach_id: str
    lane: str
    booking_id: str | None
    subject: str | None
    distance: float | None
    threshold: float | None
    evidence: list[str] = Field(description="The biometric.verify_failed event (against: entry).")
    detail: str


class GateSession(_Strict):
    """gate.session_unbalanced (alarm) / gate.session_closed: a visiting session ended.

    ``still_inside``: every visitor who entered and has not left (from the occupancy ledger).
    Every visitor's entry face is destroyed at this moment.
    """

    session: str
    ended_at: datetime
    still_inside: list[dict[str, Any]]
    detail: str


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "gate.swap_suspected": GateSwapSuspected, "gate.pin_lockout": GatePinLockout,
    "gate.pin_lockout_cleared": GatePinLockout, "gate.session_unbalanced": GateSession,
    "gate.session_closed": GateSession,
    "gate.occupancy": GateOccupancy, "gate.anti_passback": GateAntiPassback,
    "gate.directory_applied": GateDirectory, "gate.directory_rejected": GateDirectory,
    "gate.decision": GateDecision, "gate.passage": GatePassage, "gate.dose_check": GateDoseCheck,
    "gate.emergency": GateEmergency, "gate.mode": GateMode, "gate.state_lost": GateStateLost,
}


def conforms(event: dict[str, Any]) -> None:
    """Raise when a stored gate event does not match its published payload model."""
    EVENT_PAYLOADS[event["type"]].model_validate(event["payload"])
