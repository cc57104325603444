"""``turnstile.modbus``: a plain turnstile wired to a Modbus relay/input module (TCP or RTU).

The run thread owns the module: it polls the inputs every ``poll_interval_s``,
turns their changes into the same ``turnstile.*`` events as the serial
turnstile, runs commands handed over by the command thread (a grant is a
release pulse on the direction's coil), and ends pulses on time. A module
that stops answering is a ``turnstile.fault`` alarm and the lane is out of
service (every grant refused) until it answers again; on every (re)connect
both release coils are switched off first, so no relay is left closed.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from drivers.io._lane import LaneLogic
from drivers.io._lockdown import LockdownRecord
from drivers.io._module import Module, ModuleSilent, serve_module
from drivers.io.config import ModbusTurnstileConfig
from drivers.turnstile._commands import EFFECTS as TURNSTILE_EFFECTS
from drivers.turnstile._commands import mode_note
from drivers.turnstile._commands import parse as parse_command
from edge.driver import Driver
from edge.errors import CommandError, StoreFull

FAULT_SILENT = 1  # turnstile.fault code: the I/O module stopped answering (0: cleared)


class _Job:
    def __init__(self, name: str, args):
        self.name, self.args = name, args
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: CommandError | None = None


class ModbusTurnstileDriver(Driver):
    """One lane: two release relays and the lane's contacts on one Modbus module."""

    Config = ModbusTurnstileConfig
    # the serial turnstile's vocabulary, and its effect classes (edge.commands.effects)
    command_effects = TURNSTILE_EFFECTS

    def __init__(self, config: ModbusTurnstileConfig, ctx):
        super().__init__(config, ctx)
        self.logic = LaneLogic(config.address, config.flood_report_s)
        self._lockdown = LockdownRecord(ctx.state_dir, ctx.name, ctx.log)
        self.logic.lockdown = self._lockdown.load()  # the module keeps no mode: a restart ends no lockdown
        self.online: bool | None = None
        self.fault: str | None = None
        self.stats = {"polls": 0, "failed_reads": 0, "pulses": 0, "commands_ok": 0, "commands_failed": 0,
                      "events_not_stored": 0, "last_poll_ms": None}
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._wake = threading.Event()
        self._off: dict[int, float] = {}  # coil -> monotonic time its pulse ends
        self._coil = {"in": config.coils.release_in, "out": config.coils.release_out}

    # --- run thread -----------------------------------------------------------------------

    def run(self) -> None:
        serve_module(self.config, self.ctx, self._serve, self._faulted)

    def _serve(self, module: Module) -> None:
        cfg, failures = self.config, 0
        for coil in self._coil.values():  # nothing left closed by a crash or a cut cable
            module.set_coil(coil, False)
        self._off.clear()
        while not self.ctx.stopping.is_set():
            started = time.monotonic()
            try:
                inputs = module.read_inputs()
            except ModuleSilent:
                failures += 1
                self.stats["failed_reads"] += 1
                if failures > cfg.retries:
                    raise
                continue
            failures = 0
            self.stats["polls"] += 1
            self.stats["last_poll_ms"] = round((time.monotonic() - started) * 1000, 2)
            self._back()
            events, pulses = self.logic.on_inputs(inputs)
            self._emit_all(events)
            for direction in pulses:
                self._pulse(module, direction)
            self._emit_all(self.logic.expire(time.monotonic()))
            self._emit_all(self.logic.tick())
            self._run_jobs(module)
            self._end_pulses(module)
            self._wait(started + cfg.poll_interval_s)

    def _wait(self, until: float) -> None:
        """Sleep to the next poll or pulse end; a command wakes us at once."""
        ends = [until, *self._off.values()]
        timeout = max(0.0, min(ends) - time.monotonic())
        if self._wake.wait(timeout):
            self._wake.clear()

    def _pulse(self, module: Module, direction: str) -> None:
        coil = self._coil[direction]
        module.set_coil(coil, True)
        self._off[coil] = time.monotonic() + self.config.pulse_s
        self.stats["pulses"] += 1

    def _end_pulses(self, module: Module) -> None:
        now = time.monotonic()
        for coil, end in list(self._off.items()):
            if end <= now:
                module.set_coil(coil, False)
                del self._off[coil]

    def _back(self) -> None:
        if self.online:
            return
        was_faulted = self.fault is not None
        self.online, self.fault = True, None
        self.ctx.log.info("modbus_module_online", module=self.config.host or self.config.serial_port)
        self._emit("turnstile.online", {"address": self.config.address})
        if was_faulted:
            self._emit("turnstile.fault", self.logic.stamp(code=0))
        self.ctx.health_changed()

    def _faulted(self, reason: str) -> None:
        self.logic.cancel()
        self._fail_jobs(f"the lane is out of service: {reason}")
        if self.fault is not None:
            return  # already reported; still trying
        self.fault = reason
        was_online, self.online = self.online, False
        self.ctx.log.warning("modbus_module_silent", error=reason)
        self._emit("turnstile.fault", self.logic.stamp(code=FAULT_SILENT), "alarm")
        if was_online:
            self._emit("turnstile.offline", {"address": self.config.address, "reason": reason})
        self.ctx.health_changed()

    def _emit_all(self, events) -> None:
        for type, payload, priority in events:
            self._emit(type, payload, priority)

    def _emit(self, type: str, payload: dict, priority: str = "normal") -> None:
        try:
            self.ctx.emit(type, payload, priority)
        except StoreFull:
            self.stats["events_not_stored"] += 1
            self.ctx.log.warning("modbus_turnstile_event_not_stored", type=type)

    # --- commands ---------------------------------------------------------------------------

    @classmethod
    def check_command(cls, config: ModbusTurnstileConfig, name: str, args: dict[str, Any]):
        """The validated arguments; CommandError before anything reaches the module."""
        parsed, _request, _expect = parse_command(name, dict(args or {}))
        if parsed.address not in (None, config.address):
            raise CommandError(f"{name}: this lane has address {config.address}, not {parsed.address}")
        if name == "set_time":
            raise CommandError("set_time: a relay module keeps no clock")
        return parsed

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run one command on the run thread; the result follows the module's reply."""
        parsed = self.check_command(self.config, name, args)
        if self.fault is not None or not self.online:
            self.stats["commands_failed"] += 1
            raise CommandError(f"{name} not sent: the lane is out of service "
                               f"({self.fault or 'the I/O module has not answered yet'})")
        job = _Job(name, parsed)
        self._jobs.put(job)
        self._wake.set()
        if not job.done.wait(self.config.command_timeout_s):
            self.stats["commands_failed"] += 1
            raise CommandError(f"{name}: not done within {self.config.command_timeout_s:g}s; "
                               "its effect is unknown, check the lane")
        if job.error:
            self.stats["commands_failed"] += 1
            raise job.error
        self.stats["commands_ok"] += 1
        return job.result

    def _run_jobs(self, module: Module) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            started = time.monotonic()
            try:
                result = self._execute(module, job.name, job.args)
            except CommandError as exc:
                job.error = exc
            except ModuleSilent as exc:
                job.error = CommandError(f"{job.name} NOT confirmed: {exc}; treat the lane as unchanged")
                job.done.set()
                raise
            else:
                job.result = {"ok": True, "command": job.name, "address": self.config.address,
                              "rtt_ms": round((time.monotonic() - started) * 1000, 2), **result}
            job.done.set()

    def _execute(self, module: Module, name: str, a) -> dict[str, Any]:
        lane = self.logic
        if name == "grant":
            if lane.lockdown:
                raise CommandError("grant refused: the lane is in lockdown (release it first)")
            lane.grant(a.direction, a.passes, a.timeout_s, time.monotonic())
            self._pulse(module, a.direction)
            self._emit("turnstile.granted", {"address": self.config.address, "direction": a.direction,
                                             "passes": a.passes, "timeout_s": a.timeout_s})
        elif name in ("lock", "lockdown") and lane.emergency:
            raise CommandError(f"{name} refused: the fire-alarm release is active; the lane cannot be "
                               "locked until it clears")
        elif name in ("deny", "lock", "lockdown", "unlock"):
            if name == "unlock" and lane.lockdown:
                self._lockdown.leave(name)
            elif name == "lockdown":
                self._lockdown.enter()
            lane.cancel()
            lane.free = name == "unlock"
            lane.lockdown = name == "lockdown" or (lane.lockdown and name != "unlock")
            for coil in self._coil.values():
                module.set_coil(coil, lane.free)
                self._off.pop(coil, None)
        elif name == "release":
            if lane.lockdown:
                self._lockdown.leave(name)
            lane.lockdown = False
        elif name == "read_counters":
            return {"counters": dict(lane.counters)}
        return {"status": self._status()}

    def _status(self) -> dict[str, Any]:
        lane = self.logic
        return {"mode": "lockdown" if lane.lockdown else ("free" if lane.free else "normal"),
                "emergency": lane.emergency, "inputs": dict(lane.inputs or {}),
                "open_grants": {d: g.passes_left for d, g in lane.grants.items()}}

    def _fail_jobs(self, reason: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            job.error = CommandError(f"{job.name} not sent: {reason}")
            job.done.set()

    def health(self) -> dict[str, Any]:
        status = "ok" if self.online and self.fault is None else "down"
        report = {"status": status, "in_service": status == "ok", "fault": self.fault,
                  "tamper_flapping": self.logic.tamper.active, "tamper_changes_suppressed": self.logic.tamper.suppressed,
                  "forced_flooding": self.logic.forced.active, "forced_suppressed": self.logic.forced.suppressed,
                  "counters": dict(self.logic.counters), **self._status(), **self.stats}
        if note := mode_note(report["mode"], self.ctx.name):  # `edge status`: what the lane does, what ends it
            report["mode_note"] = note
        return report

    def close(self) -> None:
        self._fail_jobs("the driver is stopping")
