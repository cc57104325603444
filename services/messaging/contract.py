"""The messaging cache's part of the MQTT contract (published in docs/asyncapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.schema import SITE, TABLET
from services.messaging._docs import ContactsDoc, InboundDoc, StatusDoc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sealed(_Strict):
    """Content sealed to central's X25519 key: ephemeral X25519 ECDH, HKDF-SHA256 (salt = epk,
    info = "edge messaging seal v1"), AES-256-GCM with the message id as associated data."""

    alg: Literal["X25519-HKDF-SHA256-A256GCM"]
    epk: str = Field(description="base64 raw ephemeral X25519 public key")
    nonce: str = Field(description="base64 96-bit nonce")
    ct: str = Field(description="base64 ciphertext + tag of SealedContent (canonical JSON)")


class SealedContent(_Strict):
    """What a sealed message.out opens to (central's side only)."""

    message_id: str
    resident: str = Field(description="resident pseudonym")
    contact: str
    body: str
    attachments: list[dict[str, str]] = Field(description="[{media_type, data (base64)}]")
    created_at: datetime


class MessageOut(_Strict):
    """message.out (normal): a resident's message for moderation. Its content is sealed."""

    message_id: str = Field(description="Use it in msg/status documents.")
    privileged: bool = Field(description="Legal correspondence: route past content moderation.")
    sealed: Sealed


class MessageRead(_Strict):
    """message.read (normal): the resident opened an inbound message (sent once per message)."""

    message_id: str
    read_at: datetime


class CentralRefused(_Strict):
    """message.central_refused (alarm): a contacts, status or inbound document was refused whole, or the
    held contacts allowlist no longer verifies (its signer was revoked) and was dropped."""

    kind: Literal["contacts", "status", "in"]
    reason: str


EVENT_PAYLOADS = {"message.out": MessageOut, "message.read": MessageRead,
                  "message.central_refused": CentralRefused, "message.sealed_content": SealedContent}


def channels():
    from edge.contract import Channel

    dev = {"site": SITE, "device": TABLET}
    return [
        Channel("tabletContacts", "edge/v1/{site}/{device}/msg/contacts", "receive", ContactsDoc,
                "The signed contacts allowlist of every resident on the tablet (retained).",
                "Ed25519-signed, then sealed to the tablet ({\"sealed\": envelope}, edge/sealing.py, to the "
                "`seal_key` of its birth message; refused in clear). Replaces the held list when its version is higher; a held list whose "
                "signer is revoked is dropped at once (alarm), and the next one is taken whatever its version. A message to a "
                "contact not listed for that resident is refused on the tablet before it is stored. "
                "`privileged` marks legal counsel.", retain=True, parameters=dev),
        Channel("tabletMessageStatus", "edge/v1/{site}/{device}/msg/status", "receive", StatusDoc,
                "Signed moderation and delivery status of an outbound message.",
                "States only move forward: queued, sent (device-side, on PUBACK), received, held, "
                "approved or rejected (reason from the enum in the schema's description), delivered, "
                "read. A status that would move a message back is ignored.", parameters=dev),
        Channel("tabletMessageIn", "edge/v1/{site}/{device}/msg/in", "receive", InboundDoc,
                "A signed, approved message for a resident on the tablet.",
                "Signed, then sealed to the tablet ({\"sealed\": envelope}, edge/sealing.py, to the `seal_key` "
                "of its birth message; refused in clear): the broker never sees a body or an attachment. "
                "Publish with QoS 1; the tablet keeps a persistent session, so messages published "
                "while it is off arrive on return. Stored once by `id` (redelivery is harmless). "
                "Attachments must be an allowed image type whose bytes match it.", parameters=dev),
    ]
