"""``sim.heartbeat``: emits a steady stream of events. The workhorse of demos, tests, benchmarks."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from edge.driver import Driver, DriverConfig, parse_command_args
from edge.errors import CommandError, StoreFull


class HeartbeatConfig(DriverConfig):
    rate: float = Field(default=1.0, ge=0, le=1_000_000, description="Events per second; 0 means as fast as possible.")
    event_type: str = Field(default="sim.heartbeat", pattern=r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.]*$",
                            description="Type of the events emitted.")
    priority: str = Field(default="telemetry", pattern="^(alarm|normal|telemetry)$",
                          description="Priority of the events emitted: alarm, normal or telemetry.")
    payload_bytes: int = Field(default=0, ge=0, le=1_000_000, description="Padding to make events bigger.")
    count: int | None = Field(default=None, ge=1, description="Stop emitting after this many (per start).")
    fail_every: int | None = Field(default=None, ge=1, description="Raise after this many events (tests).")
    confirm_file: Path | None = Field(
        default=None, description="Tests: after each append returned, write 'id seq' as a line here. "
        "A crash test compares it with the store: every line must be stored.")


class _NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


_CONFIRM_LINE = re.compile(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) ([1-9][0-9]*)")


def read_confirmations(path: Path) -> dict[str, int]:
    """The ``confirm_file``'s record: event id -> seq of every append that returned. A line a
    kill cut short is not a confirmation (its append may not have returned) and is skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    lines = text.split("\n")[:-1]  # the last piece has no newline yet: written partly or not at all
    return {m[1]: int(m[2]) for line in lines if (m := _CONFIRM_LINE.fullmatch(line))}


class HeartbeatDriver(Driver):
    """Emits ``event_type`` at ``rate`` with a running counter; can crash on purpose."""

    Config = HeartbeatConfig

    def __init__(self, config: HeartbeatConfig, ctx):
        super().__init__(config, ctx)
        self.sent = 0
        self.refused = 0
        self._confirm: TextIO | None = None
        if config.confirm_file is not None:
            # Line-buffered: each line reaches the kernel as soon as it is written, so it
            # survives a SIGKILL of this process (the file is the test's record, not ours).
            self._confirm = open(config.confirm_file, "a", buffering=1)
            # A SIGKILL can cut a write short at a page boundary: start on a line of our own,
            # never glued to the last run's half line.
            if self._confirm.tell() and not config.confirm_file.read_bytes().endswith(b"\n"):
                self._confirm.write("\n")

    def run(self) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate if cfg.rate else 0.0
        pad = "x" * cfg.payload_bytes
        next_at = time.monotonic()
        while not self.ctx.stopping.is_set():
            if cfg.count is not None and self.sent >= cfg.count:
                self.ctx.stopping.wait()
                return
            payload: dict[str, Any] = {"n": self.sent}
            if pad:
                payload["pad"] = pad
            try:
                event = self.ctx.emit(cfg.event_type, payload, cfg.priority)
                self.sent += 1
                if self._confirm is not None:
                    self._confirm.write(f"{event.id} {event.seq}\n")
            except StoreFull:
                self.refused += 1  # the store reported it; keep beating
            if cfg.fail_every and self.sent and self.sent % cfg.fail_every == 0:
                raise RuntimeError(f"simulated failure after {self.sent} events")
            if interval:
                next_at += interval
                if self.ctx.wait(max(0.0, next_at - time.monotonic())):
                    return

    command_effects = {"ping": "observe"}

    @classmethod
    def check_command(cls, config: HeartbeatConfig, name: str, args: dict[str, Any]) -> None:
        """``ping`` without arguments is the one command; anything else is refused before it is held."""
        if name != "ping":
            raise CommandError(f"sim.heartbeat does not support {name!r}; supported: ping")
        parse_command_args(_NoArgs, name, dict(args or {}))

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.check_command(self.config, name, args)
        return {"pong": True, "sent": self.sent}

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "sent": self.sent, "refused": self.refused}

    def close(self) -> None:
        if self._confirm is not None:
            self._confirm.close()
