"""Payloads of the ``turnstile.*`` events, as central receives them (published in docs/asyncapi.json).

Both codecs produce exactly these; the driver tests validate every event they
see against them, so the document cannot drift from what the driver emits.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Direction = Literal["in", "out"]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: int = Field(ge=1, le=32, description="Controller's bus address (1 on a point-to-point line).")


class _FromDevice(_Payload):
    device_seq: int = Field(ge=1, le=65535, description="The controller's own event number (wraps).")
    device_time: int = Field(ge=0, description="The controller's clock when it happened, UTC seconds.")


class TurnstilePassage(_FromDevice):
    """turnstile.passage: someone went through."""

    direction: Direction
    counter: int = Field(ge=0, description="The controller's passage counter of this direction after it.")


class TurnstileLaneAlarm(_FromDevice):
    """turnstile.forced / tailgate / wrong_way (alarm) and grant_timeout, held_open (normal)."""

    direction: Direction | None = None


class TurnstileTamper(_FromDevice):
    """turnstile.tamper (alarm): the housing was opened (active) or closed again."""

    active: bool
    direction: Direction | None = None


class TurnstileEmergency(_Payload):
    """turnstile.emergency (alarm): fire-alarm free swing started (active) or ended.

    While active the driver refuses lock and lockdown; the hardware's fail-safe wins.
    ``detected_by: status`` when the event itself was lost and the status flag told us.
    """

    active: bool
    device_seq: int | None = Field(default=None, ge=1, le=65535)
    device_time: int | None = Field(default=None, ge=0)
    direction: Direction | None = None
    detected_by: Literal["status"] | None = None


class TurnstileFault(_FromDevice):
    """turnstile.fault: the controller reports a fault code (0 = cleared)."""

    code: int = Field(ge=0, le=255)
    direction: Direction | None = None


class TurnstileGranted(_Payload):
    """turnstile.granted: the controller ACKed a grant; the lane is open for ``passes`` people."""

    direction: Direction
    passes: int = Field(ge=1, le=255)
    timeout_s: int = Field(ge=1, le=255)


class TurnstileOnline(_Payload):
    """turnstile.online: the controller answers again (after start, a cable pull, a power cut)."""


class TurnstileOffline(_Payload):
    """turnstile.offline: the controller stopped answering, or its serial port is gone."""

    reason: str


class TurnstileEventRefused(_Payload):
    """turnstile.event_refused (alarm): a well-framed device event that cannot be true (event number 0,
    a passage without a direction): not counted, confirmed so the controller sends the next one."""

    device_seq: int = Field(ge=0, le=65535)
    kind: str
    reason: str


class TurnstileCounterGap(_Payload):
    """turnstile.counter_gap: passages the controller counted that were never reported one by one."""

    direction: Direction
    delta: int = Field(ge=1, description="How many passages were missed.")
    last_counter: int = Field(ge=0, description="The counter as last known before the gap.")
    counter: int = Field(ge=0, description="The counter after the missed passages.")
    reason: Literal["missed_while_offline", "device_queue_overflow"]


class TurnstileFlood(_Payload):
    """turnstile.flood: tamper changes, or forced passages (a sally port: forced door openings),
    came faster than one alarm each may (a flapping contact, or a controller or module reporting
    garbage); folded instead of an alarm per change. The first forced passage of a burst is always
    an alarm at once (each kind has its own limit).

    ``started`` (alarm) at the first change over the limit; ``continuing`` (normal) with the
    changes counted in each ``flood_report_s`` while it lasts; ``ended`` (normal) after a whole
    ``flood_report_s`` without one, with the total. The state the counted changes leave is a
    turnstile.tamper alarm at the flood's next report if it is not the one alarmed last (forced:
    a direction or door whose forcing was never alarmed is alarmed then).
    """

    what: Literal["status_changes", "forced"] = Field(
        description="status_changes: tamper changes not alarmed one by one; forced: turnstile.forced "
                    "(sally port: sallyport.forced and its door's changes) not alarmed one by one.")
    state: Literal["started", "continuing", "ended"]
    suppressed: int = Field(ge=0, description="Changes not alarmed since this flood's previous turnstile.flood.")
    total: int = Field(ge=1, description="Changes not alarmed since the flood started.")
    duration_s: float = Field(ge=0, description="Since the first change over the limit (ended: to the last).")
    rate: float = Field(gt=0, description="The limit in force: changes alarmed a second, sustained.")
    burst: int = Field(ge=1, description="The limit in force: changes alarmed at once.")
    detail: str


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "turnstile.passage": TurnstilePassage,
    "turnstile.grant_timeout": TurnstileLaneAlarm,
    "turnstile.forced": TurnstileLaneAlarm,
    "turnstile.tailgate": TurnstileLaneAlarm,
    "turnstile.wrong_way": TurnstileLaneAlarm,
    "turnstile.held_open": TurnstileLaneAlarm,
    "turnstile.tamper": TurnstileTamper,
    "turnstile.emergency": TurnstileEmergency,
    "turnstile.fault": TurnstileFault,
    "turnstile.granted": TurnstileGranted,
    "turnstile.online": TurnstileOnline,
    "turnstile.event_refused": TurnstileEventRefused,
    "turnstile.offline": TurnstileOffline,
    "turnstile.counter_gap": TurnstileCounterGap,
    "turnstile.flood": TurnstileFlood,
}
