"""The trust part of the MQTT contract: the revocation list central publishes, and trust events."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.schema import SHA256_HEX, SITE


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Revoked(_M):
    fingerprint: str = Field(pattern=SHA256_HEX,
                             description="SHA-256 of the raw 32-byte Ed25519 public key (as `edge keys` shows).")
    reason: str | None = Field(default=None, max_length=500)


class RevocationList(_M):
    """The site's signed list of revoked keys (retained): applied at once, never undone."""

    type: Literal["trust.revocations"]
    site: str
    serial: int = Field(ge=1, description="Grows with every list; a lower serial only adds revocations, "
                                          "and one that adds nothing is refused as a rollback.")
    issued_at: str | None = None
    revoked: list[Revoked]
    signatures: list[dict[str, Any]] = Field(description="Ed25519, by a key holding the 'config' role.")


class RevocationsApplied(_M):
    """``trust.revocations_applied`` (alarm when a key this device trusted was revoked)."""

    serial: int
    added: list[str] = Field(description="Fingerprints newly revoked.")
    trusted_keys_revoked: list[str] = Field(description="Key ids of this device's anchors now revoked.")
    unchanged: bool


class RevocationsRejected(_M):
    """``trust.revocations_rejected`` (alarm): a list was refused; nothing changed."""

    topic: str
    reason: str


class ClockJumpedBack(_M):
    """``system.clock_jumped_back`` (alarm): the wall clock is behind a time the device has seen."""

    wall: float = Field(description="The wall clock, UNIX seconds.")
    floor: float = Field(description="The device's time floor: last trusted time plus uptime since.")
    behind_s: float
    detail: str


class ClockStateRefused(_M):
    """``system.clock_state_refused`` (alarm): a value of the device's clock state (commands.db:
    its uptime, its time floor) cannot be true (damaged or crafted); it was not believed."""

    path: str = Field(description="The file the value was read from.")
    key: str = Field(description="uptime_s, floor_wall or floor_uptime.")
    value: str = Field(description="The value found (repr, at most 64 characters).")
    reason: str
    detail: str


class SinglePersonOverride(_M):
    """``system.single_person_override`` (alarm): one local operator let one person through."""

    id: str
    name: str
    target: str
    args: dict[str, Any]
    operator: str | None
    reason: str | None


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "trust.revocations_applied": RevocationsApplied,
    "trust.revocations_rejected": RevocationsRejected,
    "system.clock_jumped_back": ClockJumpedBack,
    "system.clock_state_refused": ClockStateRefused,
    "system.single_person_override": SinglePersonOverride,
}


def channels():
    from edge.contract import Channel

    return [Channel(
        "siteRevocations", "edge/v1/{site}/trust/revocations", "receive", RevocationList,
        "The signed revocation list of central's keys (retained).",
        "Signed by a key holding the 'config' role. The device applies it on arrival, before any "
        "queued command is verified, persists it, and refuses every signature of a revoked key from "
        "then on (commands: reason revoked_key). `serial` must grow; revocations are never undone "
        "(the device keeps the union). Answered by trust.revocations_applied or "
        "trust.revocations_rejected events.", retain=True, parameters={"site": SITE})]
