"""The ``[gate]`` config section: each lane's drivers and the steps a person must pass.

A flow is a list of steps for one direction and one role; the last step is
always ``grant``. Changing a flow is a config change, never a code change.
Everything is checked at start-up (exit 78 with the key path): unknown step
kinds, flows that cannot work (a visitor flow without a booking check, a dose
check after the scan it should prevent, a scan step on a lane without a
scanner), and driver names that are not configured or of the wrong kind.
"""

from __future__ import annotations

from datetime import time as time_of_day
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from edge.schema import NAME

Direction = Literal["in", "out"]
Role = Literal["visitor", "staff", "any", "card"]
OnFail = Literal["deny", "hold", "alarm"]
StepKind = Literal["verify", "identify", "dose_check", "xray", "grant", "card", "pin", "face"]
MODES = ("normal", "lockdown", "free_passage", "out_of_service")
Mode = Literal["normal", "lockdown", "free_passage", "out_of_service"]
#: Step kinds that wait for something to happen at the lane (they need a timeout).
WAITING = frozenset({"verify", "xray", "pin", "face"})
#: Step kinds of a card flow (a credential from the directory; see services.gate.credentials).
CARD_STEPS = frozenset({"card", "pin", "face"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Step(_Strict):
    """One step of a flow. ``timeout_s`` bounds a waiting step; ``on_fail`` says what a failure means."""

    kind: StepKind = Field(description="verify (1:1 booking on the lane camera), identify (1:N staff, "
                                        "what starts a staff approach), dose_check (x-ray ledger allows a "
                                        "scan), xray (a clear scan of this person), grant (open the turnstile); "
                                        "card flows: card (whose card it is), pin (the holder's PIN at "
                                        "the reader), face (1:1 against the holder's gallery subject).")
    timeout_s: float = Field(default=30.0, gt=0, le=3600,
                             description="verify/xray: wait at most this long. grant: seconds the "
                                         "turnstile stays open (1..255).")
    on_fail: OnFail = Field(default="deny", description="deny; hold (for an officer's override); "
                                                       "alarm (deny, recorded as an alarm).")
    on_timeout: OnFail = Field(default="deny", description="What a step timing out means (the person "
                                                           "usually walked away): deny by default.")
    passes: int = Field(default=1, ge=1, le=255, description="grant: people let through.")

    @model_validator(mode="after")
    def _grant_timeout(self) -> Step:
        if self.kind == "grant" and not 1 <= self.timeout_s <= 255:
            raise ValueError("a grant's timeout_s is the turnstile's open time: 1..255 seconds")
        return self


class Flow(_Strict):
    """What one kind of person must pass in one direction."""

    direction: Direction = Field(description="Which way through the lane this flow is for.")
    role: Role = Field(description="visitor (starts with a presented booking), staff (starts when the "
                                   "lane camera identifies a staff member), any (presented without a booking), "
                                   "card (starts with a card read on the lane's reader).")
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _possible(self) -> Flow:
        kinds = [s.kind for s in self.steps]
        problems = []
        if kinds[-1] != "grant" or kinds.count("grant") != 1:
            problems.append("the last step, and only the last, must be 'grant'")
        if self.role == "staff" and kinds[0] != "identify":
            problems.append("a staff flow starts with 'identify' (the camera's 1:N match starts it)")
        if "identify" in kinds[1:] or (self.role != "staff" and "identify" in kinds):
            problems.append("'identify' can only be the first step of a staff flow")
        if self.role == "visitor" and "verify" not in kinds:
            problems.append("a visitor flow needs a 'verify' step (the face against the booking)")
        if self.role != "visitor" and "verify" in kinds:
            problems.append("'verify' needs a booking: only visitor flows have one")
        if self.role == "any" and {"dose_check", "xray"} & set(kinds):
            problems.append("dose_check and xray need a known person: not possible for role 'any'")
        if "dose_check" in kinds and "xray" in kinds and kinds.index("dose_check") > kinds.index("xray"):
            problems.append("'dose_check' must come before 'xray' (a check after the scan cannot prevent it)")
        if len(set(kinds)) != len(kinds):
            problems.append("each step kind appears at most once")
        problems += _card_problems(self.role, kinds)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _card_problems(role: str, kinds: list[str]) -> list[str]:
    if role == "card":
        return [] if kinds[0] == "card" and "card" not in kinds[1:] else \
            ["a card flow starts with 'card' (the reader's card read starts it), and has it once"]
    if CARD_STEPS & set(kinds):
        return ["'card', 'pin' and 'face' need a card holder: only card flows (role = \"card\") have them"]
    return []


class Lane(_Strict):
    """One physical lane: the drivers that form it and its flows."""

    turnstile: str = Field(pattern=NAME, description="The lane's turnstile driver (turnstile.serial, "
                                                     "turnstile.modbus or sallyport.modbus).")
    turnstile_address: int | None = Field(default=None, ge=1, le=32, description="Bus address on a shared line.")
    camera: str | None = Field(default=None, pattern=NAME, description="camera.face driver name.")
    camera_direction: Direction = Field(default="in", description="Direction of a staff approach the camera starts.")
    scanners: list[str] = Field(default_factory=list, description="xray.* driver names of the lane's scanner.")
    reader: str | None = Field(default=None, pattern=NAME, description="reader.osdp driver: card flows, feedback.")
    reader_direction: Direction = Field(default="in", description="Direction of a card approach the reader starts.")
    zones: list[Annotated[str, Field(pattern=NAME)]] | None = Field(
        default=None, min_length=2, max_length=2,
        description="[zone before 'in', zone after 'in']: a passage in moves a person from the first to the "
                    "second, out the other way (occupancy, anti-passback).")
    anti_passback: Literal["hard", "soft", "off"] = Field(
        default="hard", description="A known person not in the zone this passage starts from: hard = deny, "
                                    "soft = grant and raise gate.anti_passback, off = no check.")
    flows: list[Flow] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Lane:
        seen: set[tuple[str, str]] = set()
        problems = []
        for i, flow in enumerate(self.flows):
            key = (flow.direction, flow.role)
            if key in seen:
                problems.append(f"flows[{i}]: a second flow for {flow.direction}/{flow.role}")
            seen.add(key)
            kinds = {s.kind for s in flow.steps}
            if kinds & {"verify", "identify"} and self.camera is None:
                problems.append(f"flows[{i}]: verify/identify need the lane's 'camera'")
            if kinds & {"xray", "dose_check"} and not self.scanners:
                problems.append(f"flows[{i}]: xray/dose_check need the lane's 'scanners'")
            if kinds & {"card", "pin"} and self.reader is None:
                problems.append(f"flows[{i}]: card/pin need the lane's 'reader'")
            if "face" in kinds and self.camera is None:
                problems.append(f"flows[{i}]: face needs the lane's 'camera'")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def flow(self, direction: str, role: str) -> Flow | None:
        for flow in self.flows:
            if flow.direction == direction and flow.role == role:
                return flow
        return None


class VisitingSession(_Strict):
    """A visiting session that ends every day at ``ends`` (the device's local time)."""

    name: str = Field(pattern=NAME, description="Named in the session's end event and alarm.")
    ends: time_of_day = Field(description="HH:MM: everyone who entered must have left by then.")


class GateSettings(_Strict):
    """The gate policy of this device; no lanes means no policy engine."""

    lanes: dict[Annotated[str, Field(pattern=NAME)], Lane] = Field(default_factory=dict)
    initial_mode: Mode = Field(default="normal", description="Mode on the very first start; later the "
                                                            "last mode set is kept across restarts.")
    hold_timeout_s: float = Field(default=600.0, gt=0, le=86400,
                                  description="A held approach with no officer decision is denied after this.")
    command_timeout_s: float = Field(default=10.0, gt=0, le=120,
                                     description="A driver command without a result fails the step after this.")
    scan_freshness_s: float = Field(default=120.0, gt=0, le=3600,
                                    description="An x-ray result taken longer ago than this is refused "
                                                "(scan_stale): an old clear scan must not let a person through. "
                                                "Judged by the device's time floor too: a clock set back "
                                                "makes no old scan fresh.")
    max_wrong_pins: int = Field(default=3, ge=1, le=10,
                                description="Wrong PINs in a row (any lane of this gate) after which a card "
                                            "holder's card is locked out here (pin_locked); a correct PIN "
                                            "resets the count. 1..10.")
    pin_lockout_s: float = Field(default=900.0, ge=60, le=86400,
                                 description="How long a locked-out card is denied without asking for a PIN "
                                             "(60 s .. 1 day), by the trusted time and the device's uptime "
                                             "both; kept across restarts. After it, the next wrong PIN locks "
                                             "the card again at once.")
    zones: list[Annotated[str, Field(pattern=NAME)]] = Field(
        default_factory=list, description="The areas people are counted in, e.g. outside, visits, inside; "
                                          "the first is outside the prison.")
    visiting_sessions: list[VisitingSession] = Field(
        default_factory=list, description="At each session's end, visitors still inside are an alarm "
                                          "(gate.session_unbalanced) and every entry face is destroyed.")

    @model_validator(mode="after")
    def _zones_known(self) -> GateSettings:
        problems = [f"lanes.{n}.zones: {z!r} is not in [gate].zones ({', '.join(self.zones) or 'none'})"
                    for n, lane in self.lanes.items() for z in (lane.zones or []) if z not in self.zones]
        problems += [f"lanes.{n}.zones: a lane moves people between two different zones"
                     for n, lane in self.lanes.items() if lane.zones and lane.zones[0] == lane.zones[1]]
        if self.visiting_sessions and not self.zones:
            problems.append("visiting_sessions need [gate].zones (who is inside is read from the occupancy)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def __repr__(self) -> str:  # config errors print the section, not its whole contents
        return f"the [gate] section ({len(self.lanes)} lanes)"


_KINDS = {"turnstile": ("turnstile.serial", "turnstile.modbus", "sallyport.modbus"), "reader": ("reader.osdp",), "camera": ("camera.face",), "scanners": ("xray.folder", "xray.stream")}


def _against_drivers(gate: GateSettings, info: ValidationInfo) -> GateSettings:
    """Every driver a lane names is configured under [[drivers]], with the right kind."""
    drivers: list[Any] | None = info.data.get("drivers")
    if drivers is None:  # the drivers list itself is invalid: reported on its own
        return gate
    kinds = {d.name: d.kind for d in drivers}
    problems = []
    for lane_name, lane in gate.lanes.items():
        for key, allowed in _KINDS.items():
            value = getattr(lane, key)
            for i, name in enumerate(value if isinstance(value, list) else [value]):
                if name is None:
                    continue
                where = f"lanes.{lane_name}.{key}" + (f"[{i}]" if isinstance(value, list) else "")
                if name not in kinds:
                    problems.append(f"{where}: no driver named {name!r} in [[drivers]] "
                                    f"(configured: {', '.join(kinds) or 'none'})")
                elif not any(kinds[name] == k or k.endswith(".") and kinds[name].startswith(k) for k in allowed):
                    problems.append(f"{where}: driver {name!r} is a {kinds[name]}, expected {' or '.join(allowed)}")
    if problems:
        raise PydanticCustomError("gate_drivers", "; ".join(problems).replace("{", "(").replace("}", ")"))
    return gate


#: The type of ``Settings.gate``: must come after ``drivers`` in Settings (it checks against them).
GateField = Annotated[GateSettings, AfterValidator(_against_drivers)]
