"""Whether an x-ray result may count for the person in a lane: the gate's freshness rule."""

from __future__ import annotations

from datetime import datetime


def scan_problem(event, *, lane: str, scanners, freshness_s: float, skew_s: float,
                 now: float) -> tuple[str, str] | None:
    """(reason, detail) when the scan cannot count: another lane's scanner, an unreadable time,
    older than ``freshness_s`` or dated further ahead than the clock skew; None when it can.

    ``now`` is the device's trusted time (the command router's ``trusted_now``: never before
    its time floor), not the bare wall clock: a clock set back must not make an old clear
    scan look fresh."""
    if event.source not in scanners:
        return "scan_wrong_lane", f"scan from {event.source}, which is not a scanner of lane {lane}"
    try:
        taken = datetime.fromisoformat(str(event.payload.get("time")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "scan_stale", f"scan time {event.payload.get('time')!r} is unreadable"
    age = now - taken
    if age > freshness_s:
        return "scan_stale", (f"scan {event.payload.get('scan_id')} was taken {age:.0f}s ago; results older "
                              f"than {freshness_s:g}s are refused (gate.scan_freshness_s)")
    if age < -skew_s:
        return "scan_stale", f"scan {event.payload.get('scan_id')} is dated {-age:.0f}s in the future"
    return None
