"""The ``[commands]`` config section: two-person rule, time limits, local control socket."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CommandsSettings(BaseModel):
    """How remote and local commands are accepted."""

    model_config = ConfigDict(extra="forbid")

    two_person: list[str] = Field(
        default_factory=list,
        description="Command names that need two signatures from distinct trusted keys, "
                    "e.g. [\"unlock\", \"release\"].")
    two_person_physical: bool = Field(
        default=False,
        description="Also require two signatures for every command the target driver marks physical.")
    max_ttl_s: float = Field(
        default=24 * 3600, gt=0,
        description="A command valid for longer than this (expires_at - issued_at) is rejected.")
    local_ttl_s: float = Field(
        default=60.0, gt=0, le=3600,
        description="Validity of a command sent through the local control socket.")
    local_group: str | None = Field(
        default=None,
        description="Group that owns state_dir/control.sock (mode 0660); default: the daemon's group.")
    rejections_per_minute: int = Field(
        default=60, ge=1,
        description="Rejection alarms recorded per minute at most; the rest are counted in one summary.")
