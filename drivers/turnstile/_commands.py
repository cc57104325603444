"""Commands the turnstile driver accepts: their arguments, checked, and the request each sends."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.turnstile import messages as m
from edge.driver import parse_command_args
from edge.errors import CommandError


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: int | None = Field(default=None, ge=1, le=32, description="Bus address; default the first configured.")


class GrantArgs(_Args):
    direction: Literal["in", "out"] = "in"
    passes: int = Field(default=1, ge=1, le=255)
    timeout_s: int = Field(default=10, ge=1, le=255, description="Close again if nobody passes within this.")


class SetTimeArgs(_Args):
    epoch: int | None = Field(default=None, ge=0, lt=2**32, description="UTC seconds; default: now.")


def _plain(cls):
    return lambda a: cls()


# name -> (argument model, request builder, reply type that completes it or None for a bare ACK)
COMMANDS: dict[str, tuple[type[_Args], Any, Any]] = {
    "grant": (GrantArgs, lambda a: m.Grant(a.direction, a.passes, a.timeout_s), None),
    "deny": (_Args, _plain(m.Deny), None),
    "lock": (_Args, _plain(m.Lock), None),
    "unlock": (_Args, _plain(m.Unlock), None),
    "lockdown": (_Args, _plain(m.Lockdown), None),
    "release": (_Args, _plain(m.Release), None),
    "set_time": (SetTimeArgs, lambda a: m.SetTime(int(time.time()) if a.epoch is None else a.epoch), None),
    "read_counters": (_Args, _plain(m.ReadCounters), m.Counters),
    "ping": (_Args, _plain(m.GetStatus), m.Status),
    "status": (_Args, _plain(m.GetStatus), m.Status),
}
#: Effect class of each command (edge.commands.effects): who may send it alone.
EFFECTS = {"grant": "barrier", "unlock": "barrier", "release": "barrier",
           "deny": "operate", "lock": "operate", "lockdown": "operate", "set_time": "operate",
           "read_counters": "observe", "ping": "observe", "status": "observe"}
#: Refused by the driver while a fire-alarm free swing is active (the hardware's fail-safe wins).
LOCKING = frozenset({"lock", "lockdown"})

#: A lane mode other than normal, and what ends it (health's mode_note, shown by `edge status`):
#: the same words for a serial controller and a Modbus relay lane.
_MODE_NOTES = {
    "lockdown": "every grant is refused until `edge turnstile release {name}` (two people: a second "
                "operator approves); when the gate itself is in lockdown (`edge gate status`), "
                "`edge gate mode normal --reason TEXT` ends it for every lane instead",
    "free": "open both ways (free passage) until `edge turnstile lock {name}`",
}


def mode_note(mode: str | None, lane: str) -> str | None:
    note = _MODE_NOTES.get(mode or "")
    return note.format(name=lane) if note else None


def parse(name: str, args: dict[str, Any]):
    """(validated args, request message, expected reply type); CommandError naming the bad argument."""
    try:
        model, build, expect = COMMANDS[name]
    except KeyError:
        raise CommandError(f"turnstile does not support command {name!r}; supported: "
                           f"{', '.join(COMMANDS)}") from None
    parsed = parse_command_args(model, name, args)
    return parsed, build(parsed), expect


class Job:
    """A command handed from the command thread to the run thread."""

    def __init__(self, name: str, address: int, request, expect):
        self.name, self.address, self.request, self.expect = name, address, request, expect
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: CommandError | None = None
        self._state = "pending"
        self._lock = threading.Lock()

    def start(self) -> bool:
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "running"
            return True

    def cancel(self) -> bool:
        """True when it had not started (and now never will)."""
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "cancelled"
            return True

    def finish(self, result: dict | None = None, error: CommandError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()
