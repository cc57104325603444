"""Payloads of the ``xray.*`` events, as central receives them (published in docs/asyncapi.json).

The end-to-end tests validate every x-ray event a subscriber receives
against these models, so the document cannot drift from what is emitted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.xray.scan import ScanFields
from edge.schema import SHA256_HEX


class XrayScan(ScanFields):
    """xray.scan (normal): one body scan from any adapter. Images never travel: hash and size only."""

    key: str = Field(description="scanner/scan_id: the scan's idempotency key (emitted once per key).")
    override: bool = Field(description="The operator decided against the scanner's outcome.")
    format: Literal["json", "xml", "dicos", "line"] = Field(description="Which source produced it.")
    record_sha256: str = Field(pattern=SHA256_HEX, description="SHA-256 of the raw record.")
    image_missing: str | None = Field(default=None, description="Image file named but never arrived.")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class XrayRejected(_Strict):
    """xray.rejected (normal): a result file was quarantined, or a stream line refused."""

    reason: str = Field(description="What was wrong, where, and what was expected.")
    bytes: int = Field(ge=0)
    file: str | None = Field(default=None, description="Watch folder: the file's name.")
    quarantined_to: str | None = Field(default=None, description="Watch folder: where it now is.")
    source: str | None = Field(default=None, description="Line stream: the port URL.")
    line: int | None = Field(default=None, ge=1, description="Line stream: line number since start.")


class _ScanRef(_Strict):
    scan_id: str
    scanner: str
    subject: str | None
    operator: str
    time: datetime


class XrayUnlawfulScan(_ScanRef):
    """xray.unlawful_scan (alarm): the scan happened without a reason, or with one the site does not allow."""

    problem: Literal["no_reason", "reason_not_allowed"]
    reason: str | None
    allowed: list[str] | None = None
    detail: str


class XrayDose(_ScanRef):
    """xray.dose_warning / xray.dose_limit (alarm): a scan crossed the warning level or reached the limit."""

    dose_usv: float
    total_before_usv: float
    total_usv: float = Field(description="Rolling-window total after this scan, all sites (µSv).")
    warning_usv: float
    limit_usv: float
    window_months: int
    problem: Literal["limit_reached", "scanned_over_limit"] | None = None
    detail: str


class XrayScannerClock(_Strict):
    """xray.scanner_clock (normal): a scan's time was over a day from the device's; the dose counts at stored_at."""

    scanner: str
    scan_id: str
    scan_time: datetime
    stored_at: datetime
    detail: str


class XrayLedgerRecovered(_Strict):
    """xray.ledger_recovered (alarm): the dose ledger was unreadable, set aside and rebuilt from stored scans."""

    problem: str
    moved_to: str
    rebuilt_scans: int = Field(ge=0)
    detail: str


class XrayStreamState(_Strict):
    """xray.stream_state (normal): the scanner's line stream connected or dropped."""

    url: str
    connected: bool
    error: str | None = None


class XrayDoseRecordsApplied(_Strict):
    """xray.dose_records_applied (normal): central's dose records for other sites were applied."""

    issued_at: datetime
    applied: int = Field(ge=0)
    stale: int = Field(ge=0, description="Site entries older than what the ledger already had.")
    own_site: int = Field(ge=0, description="Entries for this device's own site, ignored.")


class XrayDoseRecordsRejected(_Strict):
    """xray.dose_records_rejected (alarm): a dose document failed signature, schema, site or time checks."""

    topic: str
    reason: str


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "xray.scan": XrayScan,
    "xray.rejected": XrayRejected,
    "xray.unlawful_scan": XrayUnlawfulScan,
    "xray.dose_warning": XrayDose,
    "xray.dose_limit": XrayDose,
    "xray.stream_state": XrayStreamState,
    "xray.scanner_clock": XrayScannerClock,
    "xray.ledger_recovered": XrayLedgerRecovered,
    "xray.dose_records_applied": XrayDoseRecordsApplied,
    "xray.dose_records_rejected": XrayDoseRecordsRejected,
}
