"""The command contract: what central sends on ``cmd`` and what comes back on ``cmd/result``.

A command is a signed JSON object (see docs/commands.md). Its signatures cover
the canonical encoding of the object as received, so verification always runs
on the raw document and never on a re-serialised model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.schema import NAME

COMMAND_VERSION = 1
EDGE_TARGET = "edge"
MAX_COMMAND_BYTES = 64 * 1024
_CMD_NAME = r"^[a-z][a-z0-9_-]{0,62}$"

#: Machine-readable reasons of a rejected command (the ``reason`` of a result).
RejectReason = Literal[
    "malformed",       # not JSON, not an object, not the Command schema, or a name/arguments its target refuses
    "bad_signature",   # unsigned, a bad signature, or no trusted key signed it
    "under_signed",    # a barrier/erase command needs two distinct keys (or two local operators)
    "wrong_role",      # the signing key does not hold the 'command' role
    "revoked_key",     # the signing key is on the revocation list
    "expired",         # now is past expires_at
    "not_yet_valid",   # issued_at is further in the future than trust.clock_skew_s
    "ttl_too_long",    # expires_at - issued_at exceeds commands.max_ttl_s
    "replay",          # this id was already accepted by this device
    "wrong_target",    # another device or site, or no such driver here
]
REJECT_REASONS: tuple[str, ...] = RejectReason.__args__  # type: ignore[attr-defined]


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_id: str = Field(description="First 16 hex digits of SHA-256 of the raw Ed25519 public key.")
    sig: str = Field(description="Base64 Ed25519 signature of the canonical JSON of the command "
                                 "without its 'signatures' member.")


class Command(BaseModel):
    """An instruction from central (or a local operator) to one driver, or to the daemon itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = Field(default=COMMAND_VERSION, description="Command schema version.")
    id: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$",
                    description="Unique per command (a UUID); a device executes an id at most once.")
    name: str = Field(pattern=_CMD_NAME, description="What to do, e.g. 'ping', 'unlock'.")
    target: str = Field(pattern=NAME, description="A driver instance name, or 'edge' for the daemon.")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the command.")
    device: str | None = Field(default=None, pattern=NAME,
                               description="The one device this command is for.")
    site: str | None = Field(default=None, pattern=NAME,
                             description="The site this command is for (required on site-wide topics "
                                         "unless device is set).")
    reason: str | None = Field(default=None, max_length=500,
                               description="Why it was issued, for the audit trail.")
    issued_at: datetime = Field(description="UTC time of signing (ISO 8601).")
    expires_at: datetime = Field(description="UTC time after which the command is refused.")
    signatures: list[Signature] = Field(default_factory=list,
                                        description="Ed25519 signatures; see docs/commands.md.")

    @field_validator("issued_at", "expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2026-01-01T12:00:00Z")
        try:
            return value.astimezone(UTC)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
            raise ValueError("out of range (past year 9999 in UTC)") from None


class CommandResult(BaseModel):
    """The payload of a ``command.result`` event: what became of one command."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(description="The command's id. A message whose id could not be read gives no "
                                       "result on cmd/result, only its system.command_rejected alarm.")
    name: str | None = None
    target: str | None = None
    status: Literal["ok", "failed", "rejected"] = Field(
        description="ok: executed; failed: executed or attempted, and the target refused it in its "
                    "present state (lockdown, offline) or erred; rejected: never executed (see reason; "
                    "a name or arguments the target never accepts are rejected as malformed).")
    reason: RejectReason | None = Field(default=None, description="Set when status is rejected.")
    detail: str = Field(default="", description="Human-readable explanation.")
    result: dict[str, Any] | None = Field(
        default=None, description="What the command returned. Built-ins: ping {pong: true, at: device "
        "wall clock (ISO 8601 UTC), monotonic_s: device monotonic clock}; rebirth {rebirth: 'requested'}; "
        "set-log-level {level}; status: the daemon's status document (as `edge status --json`).")
    origin: Literal["mqtt", "local"] = Field(description="Central over MQTT, or the local control socket.")
    topic: str | None = Field(default=None, description="MQTT topic it arrived on.")
    operator: str | None = Field(default=None, description="Local user name (local commands).")
    approved_by: str | None = Field(default=None, description="The second local operator who approved "
                                                                "a barrier or erase command.")
    signed_by: list[str] = Field(default_factory=list, description="Key ids of valid signatures.")
    duration_ms: float | None = Field(default=None, description="Execution time in milliseconds; null "
                                                                 "when it never ran.")


def iso(ts: datetime) -> str:
    """The timestamp format commands use on the wire: UTC, seconds, 'Z'."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
