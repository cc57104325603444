"""DICOS (NEMA's DICOM-based security imaging) objects, read with pydicom.

Field mapping (the DICOS attributes that matter for a body scan):

=====================  =====================================================
Scan field             DICOS / DICOM attribute
=====================  =====================================================
scan_id                SOPInstanceUID (0008,0018)                 required
time                   AcquisitionDateTime (0008,002A)            required
scanner                DeviceSerialNumber (0018,1000), else StationName
subject                PatientID (0010,0020) — the object of inspection
operator               OperatorsName (0008,1070)                  required
reason                 ReasonForTheRequestedProcedure (0040,1002)
outcome                AlarmDecision (4010,1031): ALARM -> suspicious,
                       CLEAR -> clear, anything else -> inconclusive required
regions                ThreatSequence (4010,1011) items: ThreatROIBase/Extents
                       (x, y of each), ThreatCategory as the label
decision               AdditionalScreeningPerformed (4010,106D): YES -> search,
                       NO -> clear; absent -> the outcome's natural decision
dose_usv               EntranceDoseInmGy (0040,8302) x 1000 (X-rays: 1 Gy = 1 Sv)
                                                                  required
image                  SHA-256 and size of PixelData (never published)
=====================  =====================================================
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from drivers.xray.scan import ScanIncomplete, ScanRejected

FORMAT = "dicos"
SUFFIXES = (".dcm", ".dicos")
_REQUIRED = ("SOPInstanceUID", "AcquisitionDateTime", "OperatorsName", "AlarmDecision", "EntranceDoseInmGy")
_DT_RE = re.compile(r"^\d{14}(\.\d{1,6})?([+-]\d{4})?$")
_OUTCOME = {"ALARM": "suspicious", "CLEAR": "clear"}
_UNDEFINED_LENGTH = 0xFFFFFFFF


def parse(data: bytes, where: str) -> tuple[dict[str, Any], str | None]:
    """Bytes of a DICOS file -> (Scan fields incl. image hash, None)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(BytesIO(data))
    except InvalidDicomError:
        raise ScanRejected(f"{where}: not a DICOS/DICOM file (no DICM preamble)") from None
    except Exception as exc:  # pydicom raises many types on corrupt input; convert at our boundary
        raise ScanRejected(f"{where}: unreadable DICOS file: {type(exc).__name__}: {str(exc)[:120]}") from None
    _check_complete(ds, len(data), where)
    try:
        return _fields(ds, where), None
    except ScanRejected:
        raise
    except Exception as exc:  # a value of the wrong VR or shape deep in a sequence
        raise ScanRejected(f"{where}: DICOS attribute unreadable: {type(exc).__name__}: {str(exc)[:120]}") from None


def _check_complete(ds, size: int, where: str) -> None:
    """Raise ScanIncomplete when the file ends before its last element does (cut short, or still
    being written): pydicom reads a short value without complaint, and a partial image would be
    hashed and recorded as the scan's."""
    raws = [e for e in (ds.get_item(tag) for tag in ds.keys()) if hasattr(e, "value_tell")]
    if not raws:
        return
    last = max(raws, key=lambda e: e.value_tell)
    if last.length == _UNDEFINED_LENGTH:
        return  # a sequence or encapsulated pixels: its delimiter, not its length, ends it
    got = len(last.value) if last.value is not None else 0
    if got < last.length or last.value_tell + last.length != size:
        raise ScanIncomplete(f"{where}: truncated DICOS file: element {last.tag} declares {last.length} bytes, "
                             f"{got} present, file is {size} bytes; waiting for the rest")


def _fields(ds, where: str) -> dict[str, Any]:
    missing = [kw for kw in _REQUIRED if not str(ds.get(kw, "") or "").strip()]
    if not (ds.get("DeviceSerialNumber") or ds.get("StationName")):
        missing.append("DeviceSerialNumber or StationName")
    if missing:
        raise ScanRejected(f"{where}: DICOS file lacks required attribute(s): {', '.join(missing)}")
    outcome = _OUTCOME.get(str(ds.AlarmDecision).upper(), "inconclusive")
    screened = str(ds.get("AdditionalScreeningPerformed", "") or "").upper()
    decision = {"YES": "search", "NO": "clear"}.get(screened, "search" if outcome == "suspicious" else "clear")
    fields: dict[str, Any] = {
        "scan_id": str(ds.SOPInstanceUID),
        "time": _dt(str(ds.AcquisitionDateTime), where),
        "scanner": str(ds.get("DeviceSerialNumber") or ds.get("StationName")),
        "subject": str(ds.PatientID) if ds.get("PatientID") else None,
        "operator": str(ds.OperatorsName),
        "reason": str(ds.get("ReasonForTheRequestedProcedure", "") or "") or None,
        "outcome": outcome,
        "regions": [_region(item) for item in ds.get("ThreatSequence", [])],
        "decision": decision,
        "dose_usv": float(ds.EntranceDoseInmGy) * 1000.0,
    }
    pixels = ds.get("PixelData")
    if pixels is not None:
        raw = bytes(pixels)
        fields["image"] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    return fields


def _region(item) -> dict[str, Any]:
    base = list(item.get("ThreatROIBase", [0, 0, 0]))
    extents = list(item.get("ThreatROIExtents", [0, 0, 0]))
    label = item.get("ThreatCategory")
    return {"x": base[0], "y": base[1], "w": extents[0], "h": extents[1],
            "label": str(label) if label else None}


def _dt(value: str, where: str) -> datetime:
    """DICOM DT (YYYYMMDDHHMMSS[.ffffff][+HHMM]) -> aware datetime; no offset means UTC."""
    from pydicom.valuerep import DT

    text = value.strip()
    try:
        if not _DT_RE.fullmatch(text):
            raise ValueError(text)
        stamp = DT(text)
    except ValueError:
        raise ScanRejected(f"{where}: AcquisitionDateTime {value[:32]!r} is not a DICOM DT "
                           "(expected YYYYMMDDHHMMSS)") from None
    naive = datetime(stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second,
                     stamp.microsecond)
    return naive.replace(tzinfo=stamp.tzinfo or UTC)
