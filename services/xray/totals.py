"""Dose records from central for scans at other sites: the signed document and applying it.

Central publishes, on ``edge/v1/{site}/xray/dose`` (or hands a file to
``edge xray import``), a document signed with edge.signing::

    {"type": "xray.dose_records", "site": "hmp-example", "issued_at": "2026-02-01T10:00:00Z",
     "subjects": [{"subject": "A1234BC", "origins": [
         {"site": "hmp-other", "scans": [{"scan_id": "S9", "dose_usv": 2.5,
                                          "time": "2026-01-20T08:00:00Z"}]},
         {"site": "hmp-third", "total_usv": 12.0, "as_of": "2026-01-31T00:00:00Z"}]}],
     "signatures": [...]}

Each origin entry *replaces* what the ledger holds for that subject at that
site (newest ``issued_at`` wins), so re-sending never double counts; entries
for this device's own site are ignored. A bare total counts as one dose at
``as_of``: it leaves the window no earlier than its real scans would.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from edge.errors import EdgeError
from edge.signing import DocumentRejected, open_signed
from services.xray.ledger import DoseLedger

MAX_DOC_BYTES = 4 * 1024 * 1024


class DoseRecordsRejected(EdgeError):
    """A dose document from central was refused (bad signature, schema, site or time)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RemoteScan(_Strict):
    """One scan at another site."""

    scan_id: str = Field(min_length=1, max_length=128)
    dose_usv: float = Field(ge=0, le=1000)
    time: AwareDatetime


class Origin(_Strict):
    """One other site's share of a subject's dose: per-scan records, or a bare total."""

    site: str = Field(min_length=1, max_length=64)
    scans: list[RemoteScan] | None = Field(default=None, max_length=10_000)
    total_usv: float | None = Field(default=None, ge=0, le=1_000_000)
    as_of: AwareDatetime | None = None

    @model_validator(mode="after")
    def _scans_or_total(self) -> Origin:
        if (self.scans is None) == (self.total_usv is None):
            raise ValueError("give either 'scans' or 'total_usv' (with 'as_of'), not both or neither")
        if self.total_usv is not None and self.as_of is None:
            raise ValueError("'total_usv' needs 'as_of'")
        return self

    def records(self) -> list[dict[str, Any]]:
        if self.scans is not None:
            return [s.model_dump() for s in self.scans]
        return [{"scan_id": f"total@{self.as_of.isoformat()}", "dose_usv": self.total_usv, "time": self.as_of}]


class SubjectRecords(_Strict):
    """Everything central knows about one subject's dose at other sites."""

    subject: str = Field(min_length=1, max_length=128)
    origins: list[Origin] = Field(max_length=1000)


class DoseRecords(_Strict):
    """Signed dose records from central: per subject, what each other site has recorded."""

    type: Literal["xray.dose_records"]
    site: str
    issued_at: AwareDatetime
    subjects: list[SubjectRecords] = Field(max_length=100_000)
    signatures: list[dict[str, Any]]


def parse_verified(raw: Any, *, site: str, trusted: dict, clock_skew_s: float,
                   now: datetime | None = None) -> DoseRecords:
    """Check JSON (bytes, or a value already decoded), signature, schema, addressee and time.

    ``now``: the daemon's trusted time (never before its time floor); a clock set back must not
    refuse central's fresh records as "in the future": their doses would go uncounted."""
    try:
        records = open_signed(raw, trusted, DoseRecords, "dose records", site=site)
    except DocumentRejected as exc:
        raise DoseRecordsRejected(str(exc)) from None
    if records.issued_at.tzinfo is None:
        raise DoseRecordsRejected("dose records: issued_at must carry a timezone")
    if records.issued_at > (now or datetime.now(UTC)) + timedelta(seconds=clock_skew_s):
        raise DoseRecordsRejected(f"dose records: issued_at {records.issued_at.isoformat()} is in the future; "
                                  "check this device's clock")
    return records


def apply(ledger: DoseLedger, records: DoseRecords) -> dict[str, int]:
    """Apply every origin entry; returns counts of applied | stale | own_site."""
    counts = {"applied": 0, "stale": 0, "own_site": 0}
    for subject in records.subjects:
        for origin in subject.origins:
            result = ledger.apply_remote(subject.subject, origin.site, origin.records(), records.issued_at)
            counts[result] += 1
    return counts
