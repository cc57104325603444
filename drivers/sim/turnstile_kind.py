"""``sim.turnstile``: a simulated turnstile controller run by the daemon itself.

For sites and demos without hardware: the simulator opens a pty at ``path``,
where a ``turnstile.serial`` driver of the same daemon (or another program)
connects. A scenario plays on start; more steps arrive as commands
(``step`` with ``{"steps": "passage in; forced out"}``), so central can drive
an acceptance test of the whole chain without a turnstile.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.sim import turnstile_scenario as scen
from drivers.sim.turnstile import TurnstileSim
from edge.driver import Driver, DriverConfig, parse_command_args
from edge.errors import CommandError


class SimTurnstileConfig(DriverConfig):
    codec: Literal["rs485-bus", "bcc-p2p"] = Field(description="The framing the simulated controllers speak.")
    path: str = Field(description="Where the simulated serial port appears (a symlink to the pty).")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000, description="Bytes are paced at this rate.")
    addresses: list[int] = Field(default=[1], min_length=1, max_length=32,
                                 description="Bus addresses of the simulated controllers.")
    auto_pass: bool = Field(default=False, description="Someone walks through after every grant.")
    scenario: str = Field(default="", description="Steps played at start (see `edge sim turnstile --help-steps`).")
    repeat: bool = Field(default=False, description="Play the scenario again and again.")

    @field_validator("scenario")
    @classmethod
    def _steps_parse(cls, value: str) -> str:
        scen.parse(value)  # ValueError names the bad step
        return value


class _PingArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StepArgs(_PingArgs):
    steps: str = Field(description="Scenario steps, e.g. 'passage in; forced out'.")


_ARGS: dict[str, type[BaseModel]] = {"ping": _PingArgs, "step": _StepArgs}


class SimTurnstileDriver(Driver):
    """Runs a TurnstileSim until the daemon stops; ``step`` plays scenario steps on it."""

    Config = SimTurnstileConfig
    command_effects = {"ping": "observe", "step": "operate"}  # step plays the far side of the wire

    def __init__(self, config: SimTurnstileConfig, ctx):
        super().__init__(config, ctx)
        self.sim: TurnstileSim | None = None

    def run(self) -> None:
        cfg = self.config
        self.sim = TurnstileSim(cfg.codec, cfg.path, baudrate=cfg.baudrate, addresses=tuple(cfg.addresses),
                                auto_pass=cfg.auto_pass).start()
        steps = scen.parse(cfg.scenario)
        while steps and not self.ctx.stopping.is_set():
            scen.run(self.sim, steps, self.ctx.stopping)
            if not cfg.repeat:
                break
        self.ctx.stopping.wait()

    @classmethod
    def check_command(cls, config: SimTurnstileConfig, name: str, args: dict[str, Any]) -> list:
        """The parsed scenario steps of ``step`` ([] for ``ping``); CommandError for anything else."""
        model = _ARGS.get(name)
        if model is None:
            raise CommandError(f"sim.turnstile supports 'step' and 'ping', not {name!r}")
        parsed = parse_command_args(model, name, dict(args or {}))
        if name == "ping":
            return []
        try:
            return scen.parse(parsed.steps)
        except ValueError as exc:
            raise CommandError(f"step: {exc}") from None

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        steps = self.check_command(self.config, name, args)
        if self.sim is None:
            raise CommandError("the simulator is not running yet; try again shortly")
        if name == "ping":
            return {"pong": True, "path": self.config.path, "requests": len(self.sim.requests)}
        threading.Thread(target=scen.run, args=(self.sim, steps, self.ctx.stopping), daemon=True,
                         name="sim-turnstile-steps").start()
        return {"started": [s.name for s in steps]}

    def health(self) -> dict[str, Any]:
        if self.sim is None:
            return {"status": "ok"}
        return {"status": "ok", "path": self.config.path, "plugged": self.sim.line.plugged,
                "counters": {str(a): d.counters for a, d in self.sim.devices.items()}}

    def close(self) -> None:
        if self.sim is not None:
            self.sim.stop()
