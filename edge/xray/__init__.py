"""Body-scanner policy shared by the daemon, the CLI and the gate: dose ledger and lawful-scan rule.

The scanner adapters live in ``drivers/xray``; this package holds what must
work without a driver running: ``ledger.DoseLedger`` (per-person rolling dose,
offline, reconciled with central) and ``check_subject`` for the gate policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.xray.ledger import DoseCheck

__all__ = ["check_subject"]


def check_subject(settings, subject: str) -> DoseCheck:
    """May ``subject`` be scanned now? What the gate policy asks before a scan.

    ``DoseCheck.allowed`` is False at or over the site's limit (``reason`` says
    why, for the operator). Works offline and without the daemon: inside it,
    the running x-ray service answers; elsewhere the ledger file is read.
    """
    import sys

    from edge.xray.ledger import DoseLedger

    service_module = sys.modules.get("edge.xray.service")  # not loaded: no service in this process
    service = service_module.current() if service_module else None
    if service is not None:
        return service.check(subject)
    ledger = DoseLedger(settings.state_dir, settings.site, settings.xray, readonly=True)
    try:
        return ledger.check(subject)
    finally:
        ledger.close()
