"""The update and remote-config part of the MQTT contract: event payloads and config channels."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from edge.schema import SITE
from edge.update.remote_config import ConfigDocument


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Update(_Strict):
    running: str = Field(description="Version of the release that reports (the slot running now).")


class UpdateOffered(_Update):
    version: str
    group: str = Field(description="Rollout group that offered it: canary, site-NAME or all.")
    sha256: str


class UpdateVersion(_Update):
    version: str


class UpdateRolledBack(_Update):
    version: str | None = Field(description="The release that was rolled back.")
    reason: str | None
    to: str | None = Field(default=None, description="Slot running again (None: the base install).")


class UpdateInterrupted(_Update):
    version: str | None
    reason: str | None


class UpdateRefused(_Update):
    problem: Literal["expired", "version", "signature", "hash_mismatch", "unreachable", "too_slow", "metadata",
                     "older_release", "install_failed", "local_io"]
    detail: str
    # too_slow only: the download that was abandoned (a repository or a man in the middle dripping bytes).
    url: str | None = Field(default=None, description="too_slow: the URL abandoned.")
    role: str | None = Field(default=None, description="too_slow: the TUF role of that metadata file "
                                                       "(timestamp, snapshot, gate.all, ...), or target.")
    received_bytes: int | None = Field(default=None, ge=0, description="too_slow: bytes received.")
    elapsed_s: float | None = Field(default=None, ge=0, description="too_slow: seconds it ran.")
    limit: Literal["deadline", "min_rate"] | None = Field(
        default=None, description="too_slow: deadline ([update] download_allowance_s + length / "
                                  "download_min_rate) or min_rate (below download_min_rate over "
                                  "download_rate_window_s).")


class ConfigAccepted(_Strict):
    version: int
    keys: list[str]
    restart: str | list[str] = Field(description='"daemon", or the drivers restarted in place.')


class ConfigApplied(_Strict):
    version: int
    restarted: str | list[str]


class ConfigRolledBack(_Strict):
    version: int
    reason: str


class ConfigRefusedPayload(_Strict):
    problem: str = Field(description="not_json | not_object | signature | schema | wrong_site | wrong_device | "
                                     "expired | not_yet_valid | replayed | not_allowed | unknown_driver | invalid; "
                                     "or dropped: the applied document no longer verifies (its signer was "
                                     "revoked) and no longer holds the version floor")
    detail: str


EVENT_PAYLOADS = {
    "update.offered": UpdateOffered, "update.installed": UpdateVersion, "update.confirmed": UpdateVersion,
    "update.rolled_back": UpdateRolledBack, "update.interrupted": UpdateInterrupted,
    "update.refused": UpdateRefused, "config.accepted": ConfigAccepted, "config.applied": ConfigApplied,
    "config.rolled_back": ConfigRolledBack, "config.refused": ConfigRefusedPayload,
}


def channels():
    from edge.contract import Channel

    how = ("Ed25519-signed by a trust anchor with the 'config' role (see docs/updates.md). "
           "Publish retained with QoS 1. Applied when its version is above the last applied one and "
           "every key is on the allowlist; the device answers with config.accepted, then "
           "config.applied or config.rolled_back, or config.refused (alarm).")
    return [
        Channel("deviceConfig", "edge/v1/{site}/{device}/config", "receive", ConfigDocument,
                "A signed config document for one device (retained).", how, retain=True,
                parameters={"site": SITE, "device": "Device id."}),
        Channel("siteConfig", "edge/v1/{site}/config", "receive", ConfigDocument,
                "A signed config document for every device of a site (retained).", how, retain=True,
                parameters={"site": SITE}),
    ]
