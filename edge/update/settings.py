"""The ``[update]`` config section: where releases come from and how they are confirmed."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.config_files import InputDir, InputFile


class UpdateSettings(BaseModel):
    """Signed over-the-air updates (off unless ``metadata_url`` is set)."""

    model_config = ConfigDict(extra="forbid")

    metadata_url: str | None = Field(
        default=None, description="Base URL of the TUF metadata (http:// or https://); unset: no updates.")
    targets_url: str | None = Field(default=None, description="Base URL of the release archives "
                                                              "(default: metadata_url/../targets).")
    trusted_root: InputFile | None = Field(
        default=None, description="TUF root metadata shipped with the install (e.g. /etc/edge/tuf-root.json): "
                                  "the trust anchor; required with metadata_url.")
    install_root: InputDir = Field(default=Path("/"), description="Slots live in INSTALL_ROOT/opt/edge/releases.")
    rollout_group: Literal["canary", "default"] = Field(
        default="default", description="canary devices also take releases offered to the canaries; "
                                       "every device takes those offered to its site and to all.")
    check_interval_s: float = Field(default=3600.0, ge=1, description="How often to look for a release.")
    health_deadline_s: float = Field(default=120.0, gt=0,
                                     description="A new slot that is not healthy by then is rolled back.")
    max_boot_attempts: int = Field(default=3, ge=1, le=20,
                                   description="Starts of an unconfirmed slot before it is rolled back.")
    idle_wait_max_s: float = Field(default=900.0, ge=0,
                                   description="Wait this long for empty lanes before a restart; "
                                               "then try again at the next check.")
    python: str = Field(default="python3", description="Interpreter that builds a slot's virtualenv.")
    download_allowance_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Fixed part of every download's deadline (connect, TLS, the server's first byte); a "
                    "download (TUF metadata or a release archive) is abandoned after download_allowance_s + "
                    "its length limit / download_min_rate seconds.")
    download_min_rate: float = Field(
        default=20_000.0, gt=0,
        description="Throughput floor in bytes/s: sets each download's deadline, and a download that receives "
                    "less than this over download_rate_window_s (after download_allowance_s) is abandoned.")
    download_rate_window_s: float = Field(default=30.0, gt=0, le=3600,
                                          description="Window over which download_min_rate is measured.")

    @field_validator("metadata_url", "targets_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return url

    @model_validator(mode="after")
    def _anchor(self) -> UpdateSettings:
        if self.metadata_url and self.trusted_root is None:
            raise ValueError("trusted_root is required when metadata_url is set (the TUF root shipped "
                             "with the install)")
        return self

    def targets_base(self) -> str:
        if self.targets_url:
            return self.targets_url
        return self.metadata_url.rstrip("/").rsplit("/", 1)[0] + "/targets/"


class RemoteConfigSettings(BaseModel):
    """Signed remote configuration from central (off unless ``enabled``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Apply config documents signed by a trust anchor "
                                                     "with the 'config' role (trust.central_keys).")
    health_deadline_s: float = Field(default=60.0, gt=0,
                                     description="A new config not healthy by then is rolled back.")
