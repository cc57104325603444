"""Body-scanner policy shared by the daemon, the CLI and the gate: dose ledger and lawful-scan rule.

The scanner adapters live in ``drivers/xray``; this package holds what must
work without a driver running: ``ledger.DoseLedger`` (per-person rolling dose,
offline, reconciled with central) and ``check_subject`` for the gate policy.
"""
