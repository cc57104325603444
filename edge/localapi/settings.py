"""``[localapi]``: where the tablet UI's unix socket lives and who may open it."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LocalApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    socket_path: Path | None = Field(
        default=None, description="Unix socket of the UI API; default state_dir/api.sock.")
    mode: int = Field(default="0660", validate_default=True,
                      description="Socket permissions: an octal string such as \"0660\" (owner and "
                                  "group only); 'other' must get no access.")
    group: str | None = Field(default=None, description="Group of the UI app's user; the socket is chown'ed to it.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=2**30, description="Largest request body accepted.")
    max_json_depth: int = Field(default=32, ge=2, le=512, description="Deepest JSON nesting accepted (400 beyond).")
    request_timeout_s: float = Field(default=10.0, gt=0, le=600, description="A request must be complete this "
                                                                             "long after its first byte (408 otherwise).")
    idle_timeout_s: float = Field(default=60.0, gt=0, le=86400, description="A kept-alive connection with no "
                                                                            "request for this long is closed.")
    max_connections: int = Field(default=256, ge=1, le=65536, description="Open connections at most (503 beyond).")
    workers: int = Field(default=4, ge=1, le=64, description="Requests handled at once (one UI: a few).")
    backlog: int = Field(default=1024, ge=16, le=65535, description="Listen backlog: connects waiting to be "
                                                                    "accepted (the kernel caps it at net.core.somaxconn).")

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
