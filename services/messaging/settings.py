"""``[messaging]``: the tablet's mailbox limits, retention, and central's sealing key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.config_files import InputFile


class MessagingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Run the messaging cache on a tablet.")
    central_seal_key: InputFile | None = Field(
        default=None, description="Central's X25519 public key (PEM): outbound messages are sealed to it.")
    retention_days: float = Field(default=30.0, gt=0, le=3650, description="Messages are purged this long after creation.")
    max_body_chars: int = Field(default=8000, ge=1, le=100_000, description="Longest message text, in characters.")
    max_attachments: int = Field(default=2, ge=0, le=10, description="Attachments per message at most.")
    max_attachment_bytes: int = Field(default=512 * 1024, ge=1024, le=16 * 1024 * 1024,
                                      description="Largest attachment.")
    attachment_types: list[str] = Field(default_factory=lambda: ["image/jpeg", "image/png"],
                                        description="Allowed types, checked by their magic bytes.")
