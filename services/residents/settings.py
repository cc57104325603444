"""``[residents]``: how long a resident's session lives, how many there may be, and how wrong PINs
are slowed down."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ResidentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    idle_timeout_s: float = Field(default=600.0, gt=0, le=86400,
                                  description="A session ends after this long without a request.")
    fresh_pin_s: float = Field(default=120.0, gt=0, le=3600,
                               description="Legal mail needs a PIN entered at most this long ago.")
    max_failures: int = Field(default=5, ge=1, le=100,
                              description="Wrong PINs in a row for one pseudonym before it is locked out.")
    lockout_s: float = Field(default=1800.0, ge=1, le=30 * 86400, description="How long a lockout lasts.")
    backoff_base_s: float = Field(default=1.0, gt=0, le=3600,
                                  description="Wait after the first wrong PIN; doubles with each one after.")
    backoff_max_s: float = Field(default=60.0, gt=0, le=86400, description="Longest wait between two tries.")
    tablet_free_failures: int = Field(default=3, ge=0, le=1000,
                                      description="Wrong PINs on this tablet (any pseudonym) before the "
                                                  "whole tablet backs off too.")
    tablet_reset_s: float = Field(default=900.0, gt=0, le=86400,
                                  description="The tablet's count of wrong PINs restarts after this quiet time.")
    min_answer_s: float = Field(default=0.25, ge=0, le=5,
                                description="Every login answer takes at least this long, right or wrong.")
    max_sessions_per_resident: int = Field(
        default=4, ge=1, le=64,
        description="Sessions one resident may hold at once; their next login ends their own least "
                    "recently used one, never another resident's.")
    max_sessions: int = Field(
        default=256, ge=1, le=10_000,
        description="Sessions on this tablet at once (a memory bound). When it is full of other residents' "
                    "sessions a login is refused (503 sessions_full); no other resident is logged out.")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_sessions_per_resident > self.max_sessions:
            raise ValueError(f"max_sessions_per_resident ({self.max_sessions_per_resident}) must not be above "
                             f"max_sessions ({self.max_sessions})")
        return self
