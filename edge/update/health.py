"""Is this daemon healthy enough to keep a new release (or a new config)?

One function per rule, each returning the problem in words or None; the problems
become the reason of ``update.rolled_back``. The broker is not required: a gate
works offline, so "broker reached or offline-tolerant state reported" means the
link reports its state without an error of its own.
"""

from __future__ import annotations

from typing import Any


def _store(daemon) -> str | None:
    return None if daemon.store is not None else "the store did not open"


def _drivers(daemon) -> str | None:
    if daemon.supervisor is None:
        return "the drivers were not started"
    bad = [f"{name} is {h.get('status')}" + (f" ({h['last_error']})" if h.get("last_error") else "")
           for name, h in daemon.supervisor.health().items() if h.get("status") != "ok" and not _external(h)]
    return f"driver(s) not running: {'; '.join(bad)}"[:400] if bad else None


def _external(health: dict) -> bool:
    """Degraded by what the device reports (tamper, a read flood), the driver itself running as it
    should: no sign against a release, and a way for anyone on a reader's cable to force a rollback."""
    return health.get("status") == "degraded" and health.get("external") is True


def _components(daemon, skip: str) -> str | None:
    bad = []
    for component in daemon.components:
        if component.name == skip:
            continue
        try:
            status: dict[str, Any] = component.status()
        except Exception as exc:  # a status bug is itself a health problem, named as such
            bad.append(f"{component.name} status failed: {type(exc).__name__}")
            continue
        if status.get("status") in ("down", "error", "failed") or "error" in status:
            bad.append(f"{component.name} is {status.get('status', 'in error')}")
    return f"component(s) unhealthy: {'; '.join(bad)}"[:400] if bad else None


def problems(daemon, *, skip: str = "update") -> list[str]:
    """Everything wrong with the running daemon now; empty means healthy."""
    found = [_store(daemon), _drivers(daemon), _components(daemon, skip)]
    return [p for p in found if p]
