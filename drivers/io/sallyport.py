"""``sallyport.modbus``: a two-door sally port on a Modbus relay/input module, interlocked.

Each door has a release coil and a "closed" contact. Every release, whoever
asks (the gate policy's grant, an officer's ``release_door``, central), goes
through the interlock (``_interlock.Interlock.may_release``): the other door
must have been read closed after its own release ended. After a restart, or
while the module is silent, no door state is known and nothing is released;
both coils are switched off on every (re)connect. A grant runs a passage
cycle: the first door for the direction, then (once it is closed again) the
second; the passage is reported when the second door has closed behind the
person. A door opening without a release is ``sallyport.forced`` (alarm).

A forced door's changes (its opening and the changes until it is closed again) go through
``edge.ratelimit.ChangeFold``: a door contact flapping, or a module reporting garbage, is a few
alarms and one ``turnstile.flood`` (what: forced), not an alarm per poll; the first forcing of a
burst is alarmed at once, and the state the flapping leaves is recorded. Released doors' changes
are recorded one by one as ever.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivers.io._interlock import FIRST, Cycle, Interlock
from drivers.io._lockdown import LockdownRecord
from drivers.io._module import Module, ModuleSilent, serve_module
from drivers.io.config import SallyPortConfig
from edge.driver import Driver, parse_command_args
from edge.errors import CommandError, StoreFull
from edge.ratelimit import ChangeFold


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: int | None = Field(default=None, ge=1, le=32)


class _Grant(_Args):
    direction: Literal["in", "out"] = "in"
    passes: int = Field(default=1, ge=1, le=1, description="A sally port takes one person per cycle.")
    timeout_s: int = Field(default=60, ge=1, le=255, description="For the whole passage through both doors.")


class _Door(_Args):
    door: Literal["outer", "inner"]


_ARGS = {"grant": _Grant, "release_door": _Door, "deny": _Args, "lock": _Args, "lockdown": _Args,
         "release": _Args, "status": _Args, "ping": _Args, "read_counters": _Args}


class SallyPortDriver(Driver):
    Config = SallyPortConfig
    #: Effect classes (edge.commands.effects): opening a door is a barrier command (two people
    #: when a person asks; the gate policy's own grants are its decisions), closing is not.
    command_effects = {"grant": "barrier", "release_door": "barrier", "release": "barrier",
                       "deny": "operate", "lock": "operate", "lockdown": "operate",
                       "read_counters": "observe", "status": "observe", "ping": "observe"}

    def __init__(self, config: SallyPortConfig, ctx):
        super().__init__(config, ctx)
        self.lock = Interlock(release_s=config.release_s)
        self.coils = {"outer": config.outer.release, "inner": config.inner.release}
        self._on = {"outer": False, "inner": False}
        self.online: bool | None = None
        self.fault: str | None = None
        self.emergency = False
        self._lockdown = LockdownRecord(ctx.state_dir, ctx.name, ctx.log)
        self.lockdown = self._lockdown.load()  # the module keeps no mode: a restart ends no lockdown
        self.counters = {"in": 0, "out": 0}
        self._seq = 0
        self._jobs: queue.Queue = queue.Queue()
        self._wake = threading.Event()
        self._forced_open = {"outer": False, "inner": False}  # opened without a release, not closed since
        self.forced = ChangeFold(config.flood_report_s, self._door_alarm, self._forced_report,
                                 initial={"outer": False, "inner": False})  # key: door, value: open

    # --- run thread -----------------------------------------------------------------------

    def run(self) -> None:
        serve_module(self.config, self.ctx, self._serve, self._faulted)

    def _serve(self, module: Module) -> None:
        self.lock.unknown()
        for door in self.coils:  # nothing left unlocked by a crash or a cut cable
            self._coil(module, door, False, force=True)
        failures = 0
        while not self.ctx.stopping.is_set():
            started = time.monotonic()
            try:
                inputs = module.read_inputs()
            except ModuleSilent:
                failures += 1
                if failures > self.config.retries:
                    raise
                continue
            failures = 0
            self._back()
            now = time.monotonic()
            for door in ("outer", "inner"):
                self._door(door, self.lock.on_closed(door, inputs[door], now))
            self.forced.tick()
            self._fire_alarm(inputs.get("fire_alarm", False))
            _door, events = self.lock.wants(now)
            self._emit_all(events)
            self._run_jobs(now)
            for door in self.coils:  # coils follow the interlock's releases, nothing else
                self._coil(module, door, self.lock.doors[door].released(time.monotonic()))
            if self._wake.wait(max(0.0, started + self.config.poll_interval_s - time.monotonic())):
                self._wake.clear()

    def _coil(self, module: Module, door: str, on: bool, force: bool = False) -> None:
        if force or self._on[door] != on:
            module.set_coil(self.coils[door], on)
            self._on[door] = on

    def _door(self, door: str, events) -> None:
        """A door's change: one by one when released, through the fold when it was forced."""
        change = next((p for t, p, _ in events if t == "sallyport.door"), None)
        if change is None:
            return
        forced = any(t == "sallyport.forced" for t, _, _ in events)
        if not (forced or self._forced_open[door]):
            self.forced.known(door, change["open"])
            self._emit_all(events)
            return
        self._forced_open[door] = change["open"]
        self.forced.changed(door, change["open"])

    def _door_alarm(self, door: str, open_: bool) -> None:
        self._emit("sallyport.door", {"address": self.config.address, "door": door, "open": open_})
        if open_:
            self._emit("sallyport.forced", {"address": self.config.address, "door": door}, "alarm")

    def _forced_report(self, state: str, suppressed: int, total: int, duration_s: float) -> None:
        payload = self.forced.payload(state, suppressed, total, duration_s, "forced door changes")
        self._emit("turnstile.flood", {"address": self.config.address, "what": "forced", **payload},
                   "alarm" if state == "started" else "normal")

    def _fire_alarm(self, active: bool) -> None:
        if active != self.emergency:
            self.emergency = active
            self._emit("turnstile.emergency", {"address": self.config.address, "active": active}, "alarm")

    def _back(self) -> None:
        if self.online:
            return
        was_faulted, self.online, self.fault = self.fault is not None, True, None
        self._emit("turnstile.online", {"address": self.config.address})
        if was_faulted:
            self._emit("turnstile.fault", self._stamp(code=0))
        self.ctx.health_changed()

    def _faulted(self, reason: str) -> None:
        self.lock.unknown()
        self.lock.cycle = None
        self._fail_jobs(f"the sally port is out of service: {reason}")
        if self.fault is not None:
            return
        self.fault, was_online, self.online = reason, self.online, False
        self.ctx.log.warning("sallyport_module_silent", error=reason)
        self._emit("turnstile.fault", self._stamp(code=1), "alarm")
        if was_online:
            self._emit("turnstile.offline", {"address": self.config.address, "reason": reason})
        self.ctx.health_changed()

    def _stamp(self, **payload) -> dict:
        self._seq = self._seq % 65535 + 1
        return {"address": self.config.address, "device_seq": self._seq, "device_time": int(time.time()),
                **payload}

    def _emit_all(self, events) -> None:
        for type, payload, priority in events:
            if type == "turnstile.passage":
                self.counters[payload["direction"]] += 1
                payload = self._stamp(**payload, counter=self.counters[payload["direction"]])
            elif type == "turnstile.grant_timeout":
                payload = self._stamp(**payload)
            else:
                payload = {"address": self.config.address, **payload}
            self._emit(type, payload, priority)

    def _emit(self, type: str, payload: dict, priority: str = "normal") -> None:
        try:
            self.ctx.emit(type, payload, priority)
        except StoreFull:
            self.ctx.log.warning("sallyport_event_not_stored", type=type)

    # --- commands ---------------------------------------------------------------------------

    @classmethod
    def check_command(cls, config: SallyPortConfig, name: str, args: dict[str, Any]):
        """The validated arguments; CommandError before a door is touched."""
        model = _ARGS.get(name)
        if model is None:
            raise CommandError(f"sally port does not support {name!r}; supported: {', '.join(_ARGS)} "
                               "(no unlock: both doors open would break the interlock)")
        a = parse_command_args(model, name, dict(args or {}))
        if a.address not in (None, config.address):
            raise CommandError(f"{name}: this sally port has address {config.address}")
        return a

    def handle(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        a = self.check_command(self.config, name, args)
        if self.fault is not None or not self.online:
            raise CommandError(f"{name} not done: the sally port is out of service "
                               f"({self.fault or 'the module has not answered yet'})")
        job = {"name": name, "args": a, "done": threading.Event(), "result": None, "error": None}
        self._jobs.put(job)
        self._wake.set()
        if not job["done"].wait(self.config.command_timeout_s):
            raise CommandError(f"{name}: not done within {self.config.command_timeout_s:g}s; check the doors")
        if job["error"]:
            raise CommandError(job["error"])
        return job["result"]

    def _run_jobs(self, now: float) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job["result"] = {"ok": True, "command": job["name"], **self._execute(job["name"], job["args"], now)}
            except CommandError as exc:
                job["error"] = str(exc)
            job["done"].set()

    def _execute(self, name: str, a, now: float) -> dict[str, Any]:
        lock = self.lock
        if name == "grant":
            if self.lockdown:
                raise CommandError("grant refused: the sally port is in lockdown (release it first)")
            if lock.cycle is not None:
                raise CommandError("grant refused: a passage through the sally port is in progress")
            refusal = lock.release(FIRST[a.direction], now)
            if refusal:
                raise CommandError(f"grant refused by the interlock: {refusal}")
            lock.cycle = Cycle(a.direction, now + a.timeout_s)  # the gate waits as long for the passage
            self._emit("turnstile.granted", {"address": self.config.address, "direction": a.direction,
                                             "passes": 1, "timeout_s": a.timeout_s})
        elif name == "release_door":
            if self.lockdown:
                raise CommandError("release_door refused: the sally port is in lockdown")
            refusal = lock.release(a.door, now)
            if refusal:
                raise CommandError(f"release_door {a.door} refused by the interlock: {refusal}")
        elif name in ("deny", "lock", "lockdown"):
            if name == "lockdown":
                self._lockdown.enter()
            lock.cycle = None
            lock.relock()
            self.lockdown = self.lockdown or name == "lockdown"
        elif name == "release":
            if self.lockdown:
                self._lockdown.leave(name)
            self.lockdown = False
        elif name == "read_counters":
            return {"counters": dict(self.counters)}
        return {"status": self._status(now)}

    def _status(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        doors = {n: {"closed": d.closed, "released": d.released(now)} for n, d in self.lock.doors.items()}
        return {"doors": doors, "lockdown": self.lockdown, "emergency": self.emergency,
                "cycle": self.lock.cycle.direction if self.lock.cycle else None}

    def _fail_jobs(self, reason: str) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            job["error"] = f"{job['name']} not done: {reason}"
            job["done"].set()

    def health(self) -> dict[str, Any]:
        status = "ok" if self.online and self.fault is None else "down"
        return {"status": status, "in_service": status == "ok", "fault": self.fault,
                "forced_flooding": self.forced.active, "forced_suppressed": self.forced.suppressed,
                "counters": dict(self.counters), **self._status()}

    def close(self) -> None:
        self._fail_jobs("the driver is stopping")
