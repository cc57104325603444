"""Documents central sends to a tablet: contacts allowlist, message status, inbound message.

Every one must be signed by a ``trust.central_keys`` key (edge.signing) and
name this device; anything else is refused before it touches the mailbox.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge import signing
from edge.errors import EdgeError
from edge.schema import ID, PSEUDONYM

REJECT_REASONS = ("content_policy", "threat_or_harassment", "contact_not_approved", "attachment_not_allowed",
                  "security_concern", "language_not_reviewable", "other")
# The order a message's state may only move forward in; approved and rejected are alternatives.
STATE_RANK = {"queued": 0, "sent": 1, "received": 2, "held": 3, "approved": 4, "rejected": 4,
              "delivered": 5, "read": 6}


class CentralMessageRefused(EdgeError):
    """A document from central is unsigned, badly signed, malformed, or for another device."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Contact(_M):
    id: str = Field(pattern=ID)
    name: str = Field(min_length=1, max_length=120)
    privileged: bool = Field(default=False, description="Legal counsel: routed past content moderation.")


class ResidentContacts(_M):
    resident: str = Field(pattern=PSEUDONYM)
    contacts: list[Contact]


class ContactsDoc(_M):
    """The signed allowlist: which contacts each resident on this tablet may write to."""

    type: Literal["messaging.contacts"]
    site: str
    device: str
    version: int = Field(ge=1)
    issued_at: datetime
    residents: list[ResidentContacts]
    signatures: list[dict[str, Any]]


class StatusDoc(_M):
    """Central's signed word on an outbound message's moderation or delivery state."""

    type: Literal["messaging.status"]
    device: str
    message_id: str = Field(pattern=ID)
    state: Literal["received", "approved", "rejected", "held", "delivered", "read"]
    reason: str | None = Field(default=None, description="Required when rejected: one of " + ", ".join(REJECT_REASONS))
    at: datetime
    signatures: list[dict[str, Any]]

    @model_validator(mode="after")
    def _reason(self) -> StatusDoc:
        if self.state == "rejected" and self.reason not in REJECT_REASONS:
            raise ValueError(f"a rejection needs a reason from {', '.join(REJECT_REASONS)}")
        return self


class Attachment(_M):
    media_type: str
    data: str = Field(description="base64")

    @field_validator("data")
    @classmethod
    def _b64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            raise ValueError("is not base64") from None
        return value

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


class InboundDoc(_M):
    """A signed, moderated message from a contact to a resident on this tablet."""

    type: Literal["messaging.in"]
    id: str = Field(pattern=ID)
    device: str
    resident: str = Field(pattern=PSEUDONYM)
    contact: str = Field(pattern=ID)
    body: str = Field(max_length=100_000)
    attachments: list[Attachment] = Field(default_factory=list)
    privileged: bool = False
    sent_at: datetime
    signatures: list[dict[str, Any]]


def parse_central(raw: bytes, model: type[_M], trusted: dict, device: str, site: str | None = None,
                  max_bytes: int = signing.MAX_DOCUMENT_BYTES):
    """Check the size, verify the signature, then the schema, then the audience; raise CentralMessageRefused."""
    kind = model.model_fields["type"].annotation.__args__[0]
    try:
        return signing.open_signed(raw, trusted, model, kind, site=site, device=device, max_bytes=max_bytes)
    except signing.DocumentRejected as exc:
        raise CentralMessageRefused(str(exc)) from None
