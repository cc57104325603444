"""Commands the daemon itself answers (target ``edge``): ping, status, rebirth, set-log-level.

Deliberately a closed table of harmless operations: no command can run a
shell, read a file or change configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from edge.errors import CommandError

LOG_LEVELS = ("debug", "info", "warning", "error")


def _ping(daemon, args: dict[str, Any]) -> dict[str, Any]:
    return {"pong": True, "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "monotonic_s": round(time.monotonic(), 3)}


def _status(daemon, args: dict[str, Any]) -> dict[str, Any]:
    return daemon.status()


def _rebirth(daemon, args: dict[str, Any]) -> dict[str, Any]:
    link = getattr(daemon, "link", None)
    if link is None:
        raise CommandError("this device has no MQTT link configured ([mqtt].brokers is empty)")
    link.rebirth()
    return {"rebirth": "requested"}


def _set_log_level(daemon, args: dict[str, Any]) -> dict[str, Any]:
    from edge.logs import set_level

    level = args.get("level")
    _check_log_level(args)
    set_level(level)
    return {"level": level}


#: The core's own commands to target ``edge``; each CommandRouter starts from a copy, and a
#: service adds its own to that router with ``CommandRouter.add_builtin`` (nothing is shared).
BUILTINS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "ping": _ping,
    "status": _status,
    "rebirth": _rebirth,
    "set-log-level": _set_log_level,
}


#: Effect class of each builtin (edge.commands.effects).
BUILTIN_EFFECTS: dict[str, str] = {"ping": "observe", "status": "observe", "rebirth": "operate",
                                   "set-log-level": "operate"}


def _check_log_level(args: dict[str, Any]) -> None:
    level = args.get("level")
    if level not in LOG_LEVELS:
        raise CommandError(f"args.level must be one of {', '.join(LOG_LEVELS)}; got {level!r}")


#: The core's own argument checks (a service's builtin checks its arguments when it runs).
_ARG_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {"set-log-level": _check_log_level}


def check_builtin(name: str, builtins=BUILTINS, args: dict[str, Any] | None = None) -> None:
    """CommandError for a name target ``edge`` does not have, or (``args`` given) arguments its
    check refuses: before a request is held, before a command from central or an operator runs."""
    if name not in builtins:
        raise CommandError(f"target 'edge' has no command {name!r}; it has: {', '.join(builtins)}")
    if args is not None and name in _ARG_CHECKS and builtins[name] is BUILTINS.get(name):
        _ARG_CHECKS[name](args)


def run_builtin(daemon, name: str, args: dict[str, Any], builtins=BUILTINS) -> dict[str, Any]:
    check_builtin(name, builtins)
    return builtins[name](daemon, args)
