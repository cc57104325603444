"""The one record every scanner source maps to, and the rejection every parser raises.

Each source module (``json_source``, ``xml_source``, ``dicos_source``,
``line_source``) turns its bytes into a ``Scan`` or raises ``ScanRejected``
with a reason a field engineer can act on. ``Scan.payload()`` is the body of
the ``xray.scan`` event: images never travel, only their hash and size.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import DriverError
from edge.schema import EXTERNAL_ID, SHA256_HEX

# Far above any body scanner's single-scan dose (typically 0.1-10 µSv): a bigger
# number is a unit mix-up (mSv or nSv) and must not silently fill a ledger.
MAX_SCAN_DOSE_USV = 1000.0
MAX_PIXELS = 1_000_000.0  # far beyond any scanner image side; a bigger coordinate is garbage


class ScanRejected(DriverError):
    """A scanner record cannot be accepted; ``reason`` says what and where."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ScanIncomplete(ScanRejected):
    """The file ends before its own structure says it does: still being written, or truncated."""


class Region(BaseModel):
    """A suspicious area on the image, in image pixels."""

    model_config = ConfigDict(extra="forbid")
    # Finite and bounded: Infinity would be published as null and break the contract.
    x: float = Field(ge=0, le=MAX_PIXELS, allow_inf_nan=False)
    y: float = Field(ge=0, le=MAX_PIXELS, allow_inf_nan=False)
    w: float = Field(gt=0, le=MAX_PIXELS, allow_inf_nan=False)
    h: float = Field(gt=0, le=MAX_PIXELS, allow_inf_nan=False)
    label: str | None = Field(default=None, max_length=64)


class ImageRef(BaseModel):
    """Where the image is, without the image: its SHA-256 and size."""

    model_config = ConfigDict(extra="forbid")
    sha256: str = Field(pattern=SHA256_HEX)
    bytes: int = Field(ge=0, le=2**53)

    @classmethod
    def of(cls, data: bytes) -> ImageRef:
        return cls(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


class ScanFields(BaseModel):
    """The fields of one body scan, whatever the source (base of Scan and of the event contract)."""

    model_config = ConfigDict(extra="forbid")
    scan_id: str = Field(pattern=EXTERNAL_ID, description="The scanner's id of this scan.")
    scanner: str = Field(pattern=EXTERNAL_ID, description="Scanner id (serial number or station name).")
    time: datetime = Field(description="When the scan was taken (UTC).")
    subject: str | None = Field(default=None, pattern=EXTERNAL_ID, description="Person scanned; null if unknown.")
    operator: str = Field(min_length=1, max_length=64)
    reason: str | None = Field(default=None, max_length=64, description="Recorded reason code.")
    outcome: Literal["clear", "suspicious", "inconclusive"]
    regions: list[Region] = Field(default_factory=list, max_length=64)
    decision: Literal["clear", "search", "rescan", "refer"] = Field(
        description="What the operator decided, whatever the scanner said.")
    dose_usv: float = Field(ge=0, le=MAX_SCAN_DOSE_USV, allow_inf_nan=False, description="Effective dose in µSv.")
    image: ImageRef | None = None

    @field_validator("time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone, e.g. 2026-01-31T09:15:00Z")
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
            raise ValueError("out of range (past year 9999 in UTC); check the scanner's clock") from None

    @field_validator("reason", mode="before")
    @classmethod
    def _blank_reason_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _regions_match_outcome(self) -> ScanFields:
        if self.outcome == "suspicious" and not self.regions:
            raise ValueError("outcome 'suspicious' needs at least one region")
        return self


class Scan(ScanFields):
    """One body scan as every adapter reports it; ``payload()`` is the ``xray.scan`` event body."""

    @property
    def key(self) -> str:
        """Idempotency key of the scan: the same scan seen twice has the same key."""
        return f"{self.scanner}/{self.scan_id}"

    @property
    def override(self) -> bool:
        """The operator went against the scanner (released a suspicious scan, or searched a clear one)."""
        return (self.outcome == "suspicious" and self.decision == "clear") or (
            self.outcome == "clear" and self.decision == "search")

    def payload(self, *, format: str, record_sha256: str) -> dict[str, Any]:
        body = self.model_dump(mode="json")
        body.update(key=self.key, override=self.override, format=format, record_sha256=record_sha256)
        return body


def build_scan(fields: dict[str, Any], where: str) -> Scan:
    """Validate mapped fields into a Scan; the error lists every bad field."""
    try:
        return Scan.model_validate(fields)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(record)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: missing" if err["type"] == "missing" else f"{loc}: {msg}")
        raise ScanRejected(f"{where}: wrong schema: " + "; ".join(problems)) from None
