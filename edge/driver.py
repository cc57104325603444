"""The driver interface: the one thing a third party implements.

A driver owns one device (or one simulated device). It gets a validated config
and a ``DriverContext``; it reports what happens with ``ctx.emit(...)`` and
never touches the store, MQTT or any other driver. The supervisor runs ``run()``
in a thread of its own, restarts it with backoff when it raises, and calls
``handle()`` from that driver's command thread.

A minimal driver::

    class Doorbell(Driver):
        class Config(DriverConfig):
            interval_s: float = 1.0

        def run(self) -> None:
            while not self.ctx.wait(self.config.interval_s):
                self.ctx.emit("doorbell.ring", {"loud": True})

Register it in your package's pyproject under the ``edge.drivers`` entry-point
group: ``"acme.doorbell" = "acme_edge.doorbell:Doorbell"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from edge.errors import CommandError


class DriverConfig(BaseModel):
    """Base of every driver's options model: ``name`` and ``kind`` plus the driver's own keys."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: str


def parse_command_args(model: type[BaseModel], command: str, args: dict[str, Any]) -> Any:
    """A command's arguments validated by ``model``; otherwise a CommandError that names each bad
    argument and lists the ones the command accepts (``grant accepts: direction, passes, ...``)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(args)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "args"
            problems.append(f"{where}: unknown argument" if e["type"] == "extra_forbidden" else f"{where}: {e['msg']}")
        accepted = ", ".join(model.model_fields) or "no arguments"
        raise CommandError(f"{command}: bad arguments: {'; '.join(problems)} ({command} accepts: {accepted})") from None


class DriverContext:
    """What a driver may use: emit events, log, wait, tell the time, and notice that it must stop."""

    def __init__(self, name: str, emit, log, stopping: threading.Event,
                 health_changed: Callable[[], None] = lambda: None,
                 services: Callable[[str], Any] = lambda _name: None, *, state_dir: Path | None = None,
                 now: Callable[[], float] = time.time):
        self.name = name
        self._services = services
        self._now = now
        #: The daemon's state_dir, for a driver that keeps files (None outside a daemon): given by
        #: the daemon that runs the driver, so two daemons in one process never share it.
        self.state_dir = state_dir
        self.log = log
        self.stopping = stopping
        self._emit = emit
        self._health_changed = health_changed

    def emit(self, type: str, payload: dict[str, Any] | None = None, priority: str = "normal"):
        """Record an event durably; returns it (with its ``seq``) once it is on disk.

        Raises ``StoreFull`` for non-alarm events when the store is at its cap.
        """
        return self._emit(type, payload or {}, priority, self.name)

    def now(self) -> float:
        """UNIX time to judge expiry by (a visitor's ``valid_until``, a booking's end): the later
        of the wall clock and the device's time floor (edge.commands.seen), given by the daemon
        that runs the driver, so a clock set back revives nothing. The wall clock outside a
        daemon. Use it for every "has this ended?"; keep time.monotonic() for timeouts."""
        return self._now()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True means the driver is being stopped."""
        return self.stopping.wait(seconds)

    def service(self, name: str) -> Any:
        """The daemon's component called ``name`` (the x-ray ledger ``xray``, say), or None when
        this daemon runs none: a driver uses a service without importing it."""
        return self._services(name)

    def health_changed(self) -> None:
        """Say that ``health()`` now answers differently (a device went offline, say):
        the daemon re-reads it at once for ``edge status`` and central's state message."""
        self._health_changed()


class Driver:
    """Base class of every driver. Override ``run``; optionally ``handle`` and ``health``."""

    Config: ClassVar[type[DriverConfig]] = DriverConfig
    #: Effect class of each command ``handle`` accepts (edge.commands.effects): observe,
    #: operate, barrier or erase, or a ``ByArg``. Undeclared commands are ``barrier``:
    #: two people must sign them.
    command_effects: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: DriverConfig, ctx: DriverContext):
        self.config = config
        self.ctx = ctx

    def run(self) -> None:
        """Do the driver's work until ``ctx.stopping`` is set. Raising means 'restart me'."""
        self.ctx.stopping.wait()

    @classmethod
    def check_command(cls, config: DriverConfig, name: str, args: dict[str, Any]) -> None:
        """Raise ``CommandError`` for a command ``handle`` would refuse whatever the device's
        state (an unknown name, a bad argument), without touching the device. The daemon asks
        before it holds a barrier command for a second operator, so nobody is asked to approve
        a command that cannot run. By default only a driver without ``handle`` refuses (it takes
        no command at all); a driver with its own ``handle`` checks there."""
        if cls.handle is Driver.handle:
            raise CommandError(f"{config.kind} takes no commands (not {name!r})")

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Execute a command; return its result or raise ``CommandError``."""
        raise CommandError(f"driver {self.ctx.name!r} does not support command {name!r}")

    def health(self) -> dict[str, Any]:
        """A small status dict; ``status`` is ok | degraded | down. A driver that runs as it
        should but reports what its device or surroundings say (a tamper switch, a card-read
        flood) adds ``"external": True`` to a degraded status: the update and remote-config trials
        then do not take it for a fault of the new release, so nobody on a cable can force a
        rollback with it."""
        return {"status": "ok"}

    def close(self) -> None:
        """Release devices after ``run`` returned or raised. Must not raise."""
