"""``[learning]``: the tablet's content cache and how hard it may use the uplink."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LearningSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Run the learning cache on a tablet.")
    quota_bytes: int = Field(default=4 * 1024**3, ge=1024 * 1024, le=2**44, description="Byte quota of cached content.")
    concurrency: int = Field(default=2, ge=1, le=16,
                             description="Items downloaded at once; each has one chunk in flight.")
    rate_limit_bytes_s: int = Field(default=2 * 1024 * 1024, ge=0, le=2**34,
                                    description="Download bandwidth cap in bytes/s (0 = no cap).")
    yield_to_security: bool = Field(
        default=True, description="Pause downloads while security events wait in the outbox.")
    chunk_timeout_s: float = Field(default=15.0, gt=0, le=3600, description="Wait this long for one chunk.")
    verify_budget_bytes_per_hour: int = Field(
        default=256 * 1024 * 1024, ge=0, le=2**44, description="Background re-hashing of cached files (0 = off).")
    residents: list[str] = Field(default_factory=list,
                                 description="Pseudonyms of residents on this tablet: their courses are pinned.")
