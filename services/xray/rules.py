"""What a recorded scan means for supervisors: dose crossings and unlawful reasons.

Pure functions over one ``xray.scan`` payload and the subject's totals just
before and after it; the service turns each result into an alarm event.
"""

from __future__ import annotations

from typing import Any

from services.xray.ledger import Recorded
from services.xray.settings import XraySettings


def alarms(payload: dict[str, Any], rec: Recorded, policy: XraySettings) -> list[tuple[str, dict[str, Any]]]:
    """(event type, payload) of every alarm this scan raises, in a stable order."""
    out: list[tuple[str, dict[str, Any]]] = []
    base = {"scan_id": payload["scan_id"], "scanner": payload["scanner"], "subject": payload.get("subject"),
            "operator": payload["operator"], "time": payload["time"]}
    reason = payload.get("reason")
    if not reason:
        out.append(("xray.unlawful_scan", {**base, "problem": "no_reason", "reason": None,
                    "detail": "scan recorded without a reason; a scan needs an intelligence-led "
                              "reason or an authorised cohort"}))
    elif reason not in policy.allowed_reasons:
        out.append(("xray.unlawful_scan", {**base, "problem": "reason_not_allowed", "reason": reason,
                    "allowed": list(policy.allowed_reasons),
                    "detail": f"reason {reason!r} is not allowed at this site"}))
    if not payload.get("subject"):
        return out
    dose = {**base, "dose_usv": payload["dose_usv"], "total_before_usv": round(rec.before_usv, 6),
            "total_usv": round(rec.after_usv, 6), "warning_usv": policy.warning_usv,
            "limit_usv": policy.limit_usv, "window_months": policy.window_months}
    if rec.before_usv >= policy.limit_usv:
        out.append(("xray.dose_limit", {**dose, "problem": "scanned_over_limit",
                    "detail": "the subject was already at or over the limit before this scan"}))
    elif rec.after_usv >= policy.limit_usv:
        out.append(("xray.dose_limit", {**dose, "problem": "limit_reached",
                    "detail": "this scan took the subject to the limit; further scans are refused"}))
    if rec.before_usv < policy.warning_usv <= rec.after_usv:
        out.append(("xray.dose_warning", {**dose, "detail": "this scan took the subject past the warning level"}))
    return out
