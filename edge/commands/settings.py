"""The ``[commands]`` config section: two-person rule, time limits, local control socket."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class CommandsSettings(BaseModel):
    """How remote and local commands are accepted.

    Two people are always needed for a command whose effect is ``barrier`` or
    ``erase`` (edge.commands.effects); nothing here can lower that.
    """

    model_config = ConfigDict(extra="forbid")

    two_person: list[str] = Field(
        default_factory=list,
        description="Extra command names that need two people even where the target calls them "
                    "observe/operate. Barrier and erase commands need two whatever this says.")
    max_ttl_s: float = Field(
        default=24 * 3600, gt=0, le=30 * 86400,
        description="A command valid for longer than this (expires_at - issued_at) is rejected.")
    barrier_ttl_s: float = Field(
        default=600.0, gt=0, le=3600,
        description="Longest validity of a barrier or erase command (default 10 min, at most 1 h).")
    local_ttl_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="Validity of a command sent through the local control socket.")
    local_approval_s: float = Field(
        default=300.0, gt=0, le=1800,
        description="How long a local barrier/erase request waits for a second operator's approval.")
    allow_single_person_override: bool = Field(
        default=False,
        description="DANGEROUS: let ONE local operator grant a single passage (passes = 1, reason required); "
                    "every use is an alarm event to central. Never a mode change.")
    local_group: str | None = Field(
        default=None,
        description="Group that owns state_dir/control.sock (mode 0660); default: the daemon's group.")
    rejections_per_minute: int = Field(
        default=60, ge=1, le=100_000,
        description="Rejected commands recorded per minute at most (result and alarm); the rest are only "
                    "counted, in the next alarm's suppressed_before.")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "two_person_physical" in data:
            raise ValueError("two_person_physical was removed: the two-person rule now applies by effect "
                             "class (barrier, erase) and is always on; delete the line")
        return data
