"""Resident login's part of the MQTT contract (published in docs/asyncapi.json)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from edge.schema import SITE, TABLET
from services.residents.directory import DirectoryDoc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lockout(_Strict):
    """resident.lockout (alarm): a pseudonym reached the wrong-PIN limit on this tablet."""

    pseudonym: str | None = Field(description="As typed (null when it is not even a pseudonym's shape).")
    known: bool = Field(description="Whether the pseudonym is in the tablet's directory.")
    failures: int = Field(ge=1, description="Wrong PINs in a row.")
    locked_until: datetime


class DirectoryRefusedPayload(_Strict):
    """resident.directory_refused (alarm): a resident directory was refused whole, or the held one
    no longer verifies (its signer was revoked) and was dropped: no resident logs in until the next."""

    reason: str


EVENT_PAYLOADS = {"resident.lockout": Lockout, "resident.directory_refused": DirectoryRefusedPayload}


def channels():
    from edge.contract import Channel

    return [
        Channel("tabletResidentDirectory", "edge/v1/{site}/{device}/residents/directory", "receive",
                DirectoryDoc, "The signed directory of residents who may log in on the tablet (retained).",
                "Ed25519-signed by a key with the `directory` role, then sealed to the tablet "
                "({\"sealed\": envelope}, edge/sealing.py; refused in clear: verifiers on the broker would "
                "invite an offline PIN search). Replaces the held directory when its "
                "version is higher; kept on the tablet for offline logins. A held directory whose signer is revoked "
                "is dropped at once (alarm), and the next one is taken whatever its version. Each resident has a scrypt PIN "
                "verifier with their own random salt (never the PIN) and a status: only `active` residents "
                "log in; suspending, releasing or re-keying a resident ends their sessions, and a new "
                "verifier ends a lockout.", retain=True,
                parameters={"site": SITE, "device": TABLET}),
    ]
