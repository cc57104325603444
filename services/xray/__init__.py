"""Body-scanner policy shared by the daemon, the CLI and the gate: dose ledger and lawful-scan rule.

The scanner adapters live in ``drivers/xray``; this package holds what must
work without a driver running: ``ledger.DoseLedger`` (per-person rolling dose,
offline, reconciled with central) and ``check_subject`` for the gate policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.xray.ledger import DoseCheck

__all__ = ["check_subject", "check_with", "components"]


def check_subject(settings, subject: str, service=None) -> DoseCheck:
    """May ``subject`` be scanned now? What the gate policy asks before a scan.

    ``DoseCheck.allowed`` is False at or over the site's limit (``reason`` says
    why, for the operator). Works offline and without the daemon: inside it,
    the running x-ray service (``service``, the daemon's) answers; elsewhere the ledger file is read, unless
    the running daemon says its ledger worker is down: then the answer is
    "cannot decide" (``decided`` False, refused), never a total that may miss scans.
    """
    from services.xray.ledger import DB_NAME, DoseLedger, cannot_decide

    if service is not None:
        return service.check(subject)
    down = _daemon_ledger_down(settings.state_dir)
    if down is not None:
        return cannot_decide(subject, down)
    if not (settings.state_dir / DB_NAME).is_file():  # a tablet, a gate without [xray], a wrong --config
        return cannot_decide(subject, f"no dose ledger in {settings.state_dir} (this device records no "
                                      "scans: is this a gate with [xray] enabled, and has its daemon started?)")
    ledger = DoseLedger(settings.state_dir, settings.site, settings.xray, readonly=True)
    try:
        return ledger.check(subject)
    finally:
        ledger.close()


def check_with(service, subject: str) -> DoseCheck:
    """The gate policy's dose check inside the daemon: its running x-ray service answers; without one
    (``[xray]`` off) "cannot decide", never a ledger file left by an earlier run that misses every scan since."""
    from services.xray.ledger import cannot_decide

    if service is None:
        return cannot_decide(subject, "the x-ray service is not running on this gate ([xray] enabled = false?)")
    return service.check(subject)


def _daemon_ledger_down(state_dir) -> str | None:
    """Why the running daemon's dose ledger cannot be trusted now, or None (running, or no daemon)."""
    import json

    try:
        status = json.loads((state_dir / "status.json").read_text())
        pid = int(status["pid"])
        if not status.get("running"):
            return None
        _alive(pid)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no daemon running: the ledger file is the whole truth
    xray = (status.get("components") or {}).get("xray")
    if isinstance(xray, dict) and xray.get("status") == "down":
        return "the daemon's dose ledger is not running (edge status: xray down)"
    return None


def _alive(pid: int) -> None:
    """Raise ProcessLookupError unless the daemon that wrote the status file still runs."""
    import os

    try:
        os.kill(pid, 0)
    except PermissionError:
        return  # alive, under another user


def components(daemon) -> list:
    """The daemon's x-ray service, when an ``xray.*`` driver is configured: built before the
    drivers start (it catches the ledger up first); drivers reach it as ``ctx.service("xray")``.
    Here, not in ``service``: every device loads this factory, most only to hear "none"."""
    if not any(d.kind.startswith("xray.") for d in daemon.settings.drivers):
        return []
    from services.xray.service import XrayService

    return [XrayService.from_daemon(daemon)]


components.order = 20  # after the tablet's, before the gate engine's (it asks for dose checks)
