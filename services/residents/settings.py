"""``[residents]``: how long a resident's session lives and how wrong PINs are slowed down."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
