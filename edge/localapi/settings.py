"""``[localapi]``: where the tablet UI's unix socket lives and who may open it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LocalApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    socket_path: Path | None = Field(
        default=None, description="Unix socket of the UI API; default state_dir/api.sock.")
    mode: int = Field(default=0o660, description="Socket permissions, e.g. \"0660\" (owner and group only).")
    group: str | None = Field(default=None, description="Group of the UI app's user; the socket is chown'ed to it.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=2**30, description="Largest request body accepted.")

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value):
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise ValueError(f"{value!r} is not an octal mode; expected e.g. \"0660\"") from None
        if isinstance(value, int) and value & 0o007:
            raise ValueError("must not grant 'other' any access (last octal digit must be 0)")
        return value
