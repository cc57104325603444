"""The command router: the one way in for remote and local commands.

paho's network thread and the control socket only enqueue; a single worker
thread verifies (in arrival order, so replay claims are race-free) and hands
each accepted command to its driver's own command thread. Every outcome is
recorded as a ``command.result`` event, so a result produced while the
network is down reaches central later; every rejection is also a
``system.command_rejected`` alarm (rate-limited against floods).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from functools import partial
from typing import Any

import structlog

from edge.commands.builtin import BUILTIN_EFFECTS, BUILTINS, check_builtin, run_builtin
from edge.commands.model import EDGE_TARGET, CommandResult
from edge.commands.seen import SeenIds
from edge.commands.verify import Accepted, CommandRejected, Verifier
from edge.errors import CommandError, EdgeError, EventInvalid, StoreError
from edge.mqtt import topics
from edge.supervisor import SupervisedThread

log = structlog.get_logger("edge.commands")
SOURCE = "commands"
_QUEUE_MAX = 10_000
_DRIVER_START_WAIT_S = 10.0
_IDLE_TICK_S = 5.0  # the worker looks at the clock this often even without commands


class _AlarmLimiter:
    """At most ``per_minute`` rejection records per minute; counts the rest."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.limit, self._clock = per_minute, clock
        self._window, self._used, self.suppressed = clock(), 0, 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._window >= 60.0:
            self._window, self._used = now, 0
        if self._used < self.limit:
            self._used += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


class CommandRouter:
    """Daemon component ``commands``: subscribes, verifies, executes, records."""

    name = "commands"

    def __init__(self, daemon):
        s = daemon.settings
        self._daemon = daemon
        self._settings = s.commands
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_MAX)
        self._stopping = threading.Event()
        self._thread = SupervisedThread(self._work, name="commands", emit=daemon.emit,
                                        on_change=getattr(daemon, "notify_health_changed", None))
        self._counts: Counter = Counter()
        self._counts_lock = threading.Lock()  # bumped from the worker, paho's and drivers' threads
        self._rejected: Counter = Counter()
        self._builtins, self._builtin_effects = dict(BUILTINS), dict(BUILTIN_EFFECTS)  # this daemon's
        self._limiter = _AlarmLimiter(s.commands.rejections_per_minute)
        self._device_topic = topics.cmd(s.site, s.device_id)
        self._site_topic = topics.site_cmd(s.site)
        self._verifier: Verifier | None = None
        self._control = None
        self._control_error: str | None = None
        self._last_rejection: dict[str, Any] | None = None
        self._last_prune = time.monotonic()
        self._components: dict[str, tuple[Any, frozenset[str]]] = {}  # targets that are not drivers
        self._checks: dict[str, Any] = {}  # their argument checks, where they have one
        if daemon.link is not None:
            # Registered before the link connects: a persistent session delivers the
            # commands queued while we were away right after CONNACK. They wait in
            # the queue until start() has the verifier ready.
            daemon.link.subscribe(self._device_topic, self._on_message, qos=1)
            daemon.link.subscribe(self._site_topic, self._on_message, qos=1)

    # -- component ------------------------------------------------------------------

    def start(self) -> None:
        from edge.commands.local import ControlServer, ControlUnavailable
        from edge.trust import trust_store

        s = self._daemon.settings
        runners = getattr(self._daemon.supervisor, "runners", {})
        trust = getattr(self._daemon, "trust", None) or trust_store(s)
        clocks = getattr(self._daemon, "clocks", None)  # the daemon's uptime, persisted here
        seen = SeenIds(s.state_dir, skew_s=s.trust.clock_skew_s, on_clock_back=self._clock_went_back,
                       uptime=clocks.uptime if clocks is not None else None)
        for refused in seen.refused:  # crafted or damaged: not believed, and never silently
            self._clock_state_refused(refused)
        self._verifier = Verifier(
            device=s.device_id, site=s.site, trust=trust, clock_skew_s=s.trust.clock_skew_s,
            settings=self._settings, seen=seen, builtin_effects=self._builtin_effects,
            targets={**{name: r.command_effects for name, r in runners.items()},
                     **{name: effects for name, (_, effects) in self._components.items()}},
            checks={EDGE_TARGET: lambda name, args: check_builtin(name, self._builtins, args),
                    **{name: r.check_command for name, r in runners.items()},
                    **self._checks})
        self._thread.start()
        link = self._daemon.link
        control = ControlServer(s.state_dir, self.submit_local, group=self._settings.local_group,
                                status=getattr(self._daemon, "status", None))
        try:
            control.start()
            self._control = control
        except ControlUnavailable as exc:  # remote commands and the gate itself keep working
            self._control_error = str(exc)
            log.error("control_socket_unavailable", error=str(exc))
        if self._settings.allow_single_person_override:
            log.warning("single_person_override_allowed", detail="one local operator may grant a single "
                        "passage; every use is an alarm (commands.allow_single_person_override)")
        log.info("commands_ready", trusted_keys=len(self._verifier.trust.anchors),
                 topics=[self._device_topic, self._site_topic] if link else [],
                 control_socket=str(control.path) if self._control else None)

    def stop(self) -> None:
        if self._control is not None:
            self._control.stop()
        self._stopping.set()
        self._thread.stop()
        self._queue.put(None)
        self._thread.join(10)
        if self._verifier is not None:
            self._verifier.seen.close()

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            # down: commands are queued but none is verified or run until it restarts
            **self._thread.status(),
            **{k: self._counts[k] for k in ("received", "executed", "failed", "ignored", "dropped")},
            "rejected": sum(self._rejected.values()), "rejected_by_reason": dict(self._rejected),
            "queued": self._queue.qsize(),
            "trusted_keys": len(self._verifier.trust.anchors) if self._verifier else 0,
        }
        if self._control_error:
            report["control_socket_error"] = self._control_error
        if self._last_rejection:
            report["last_rejection"] = dict(self._last_rejection)
        return report

    def add_builtin(self, name: str, fn, effect: str) -> None:
        """A command to target ``edge`` that a service adds to this daemon (a tablet's
        ``purge_resident``): ``fn(daemon, args) -> dict``; ``effect`` its effect class. Before start()."""
        self._builtins[name] = fn
        self._builtin_effects[name] = effect

    def register_target(self, name: str, submit, effects=None, check=None) -> None:
        """A daemon component that takes commands (the gate policy): before start().

        ``submit(name, args, accepted) -> Future`` must not block; its result dict (or
        CommandError) is recorded exactly like a driver's. ``effects`` declares each
        command's effect class (edge.commands.effects); undeclared ones are barrier.
        ``check(name, args)`` raises CommandError for a command ``submit`` would refuse
        whatever the state (as Driver.check_command).
        """
        from edge.commands.effects import check_declared

        check_declared(name, effects or {})
        self._components[name] = (submit, dict(effects or {}))
        if check is not None:
            self._checks[name] = check

    def trusted_now(self) -> float:
        """UNIX time to judge expiry and freshness by (a gate's x-ray results): the later of the
        wall clock and the device's time floor (edge.commands.seen), so a clock set back makes
        nothing old look recent. Any thread; only after start(), which every component follows."""
        if self._verifier is None:
            raise EdgeError("the command router has not started: the device's time floor is not read yet")
        return self._verifier.seen.trusted_now()

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self._counts[what] += 1

    def _clock_went_back(self, wall: float, floor: float) -> None:
        log.error("clock_jumped_back", wall=wall, floor=floor, behind_s=round(floor - wall, 1))
        self._record("system.clock_jumped_back", {
            "wall": wall, "floor": floor, "behind_s": round(floor - wall, 1),
            "detail": "the wall clock is behind a time this device has already seen; commands, keys, cards, "
                      "visits, documents and x-ray results are judged by the later time (check NTP and the "
                      "RTC battery: edge doctor)"}, "alarm")

    def _clock_state_refused(self, refused: dict) -> None:
        log.error("clock_state_refused", **refused)
        what = "the time floor is unknown until the wall clock sets it" if refused["key"] != "uptime_s" else \
            "the uptime counts from 0 (used ids are kept longer)"
        self._record("system.clock_state_refused", {
            **refused, "detail": f"{refused['path']}: {refused['key']} = {refused['value']} cannot be true "
                                 f"({refused['reason']}); {what}. The file was damaged or written by "
                                 "someone with the daemon's account or root: check the device"}, "alarm")

    # -- intake (other threads: only enqueue) --------------------------------------

    def _on_message(self, topic: str, payload: bytes, props=None) -> None:
        """Runs on paho's network thread: never blocks."""
        try:
            self._queue.put_nowait(("mqtt", topic, bytes(payload), None, None))
        except queue.Full:
            self._count("dropped")
            log.error("command_queue_full", topic=topic, queued=_QUEUE_MAX)

    def submit_local(self, request: dict[str, Any], operator: str) -> Future:
        """A command from this device (control socket, gate policy). Resolves to its result dict."""
        future: Future = Future()
        if self._stopping.is_set():
            future.set_exception(CommandError("the daemon is stopping; try again when it is back"))
            return future
        self._queue.put(("local", None, request, operator, future))
        return future

    def submit_policy(self, request: dict[str, Any], operator: str) -> Future:
        """A driver command decided by the gate policy engine itself: the policy is the
        authority, so it is not held for a second operator. In-process only: the control
        socket never reaches this."""
        future: Future = Future()
        if self._stopping.is_set():
            future.set_exception(CommandError("the daemon is stopping; try again when it is back"))
            return future
        self._queue.put(("policy", None, request, operator, future))
        return future

    # -- the worker ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_IDLE_TICK_S)
            except queue.Empty:
                self._tick()
                continue
            if item is None:
                return
            origin, topic, body, operator, future = item
            if origin == "local" and isinstance(body, dict) and body.get("list_pending"):
                future.set_result({"status": "ok", "pending": self._verifier.approvals.listing()})
                continue
            self._count("received")
            try:
                if origin == "mqtt":
                    accepted = self._verifier.remote(topic, body, site_wide=(topic == self._site_topic))
                else:
                    accepted = self._verifier.local(body, operator, policy=(origin == "policy"))
            except CommandRejected as rej:
                self._reject(rej, origin, topic, operator, future)
                continue
            except StoreError as exc:  # the replay database failed: refuse rather than risk a replay
                self._fail_unverified(exc, future)
                continue
            if accepted is None:
                self._count("ignored")
                log.debug("command_not_for_this_device", topic=topic)
                continue
            self._execute(accepted, future)

    def _tick(self) -> None:
        """Idle: notice a clock set back, and persist the uptime (prune saves it) now and then."""
        try:
            self._verifier.seen.trusted_now()
            if time.monotonic() - self._last_prune > 60:
                self._last_prune = time.monotonic()
                self._verifier.seen.prune()
        except StoreError as exc:
            log.error("replay_database_failed", error=str(exc))

    def _execute(self, accepted: Accepted, future: Future | None) -> None:
        cmd = accepted.command
        log.info("command_accepted", id=cmd.id, name=cmd.name, target=cmd.target, origin=accepted.origin,
                 operator=accepted.operator, approved_by=accepted.approved_by, signed_by=accepted.signed_by,
                 effect=accepted.effect)
        if accepted.single_person:
            log.warning("single_person_override", id=cmd.id, name=cmd.name, target=cmd.target,
                        operator=accepted.operator, reason=cmd.reason)
            self._record("system.single_person_override", {
                "id": cmd.id, "name": cmd.name, "target": cmd.target, "args": dict(cmd.args),
                "operator": accepted.operator, "reason": cmd.reason or cmd.args.get("reason")}, "alarm")
        started = time.monotonic()
        if cmd.target == EDGE_TARGET:
            try:
                result = run_builtin(self._daemon, cmd.name, dict(cmd.args), self._builtins)
            except CommandError as exc:
                self._finish(accepted, future, started, error=str(exc))
            else:
                self._finish(accepted, future, started, result=result)
            return
        if cmd.target in self._components:
            done = self._components[cmd.target][0](cmd.name, dict(cmd.args), accepted)
            done.add_done_callback(partial(self._driver_done, accepted, future, started))
            return
        runner = self._daemon.supervisor.runner(cmd.target)
        self._wait_started(runner, cmd.expires_at.timestamp())
        try:
            done = runner.submit(cmd.name, dict(cmd.args), not_after=cmd.expires_at.timestamp())
        except RuntimeError:  # its command executor is shut down: the daemon is stopping
            self._finish(accepted, future, started, error="the daemon is stopping; command not run")
            return
        done.add_done_callback(partial(self._driver_done, accepted, future, started))

    def _wait_started(self, runner, expires_at: float) -> None:
        # Commands queued by the broker for an offline device arrive right after the
        # connect, possibly before the driver thread has built its driver.
        deadline = min(time.monotonic() + _DRIVER_START_WAIT_S,
                       time.monotonic() + max(0.0, expires_at - self.trusted_now()))
        while runner.health().get("status") == "starting" and time.monotonic() < deadline:
            if self._stopping.wait(0.05):
                return

    def _driver_done(self, accepted: Accepted, future: Future | None, started: float, done: Future) -> None:
        """Runs on the driver's command thread when the driver has answered."""
        if done.cancelled():
            self._finish(accepted, future, started, error="cancelled: the daemon stopped before it ran")
            return
        exc = done.exception()
        if exc is None:
            result = done.result()
            self._finish(accepted, future, started, result=result if isinstance(result, dict) else {"value": result})
        elif isinstance(exc, CommandError):
            self._finish(accepted, future, started, error=str(exc))
        else:  # a driver bug: report it as a failure rather than lose the answer
            log.error("driver_command_crashed", target=accepted.command.target, name=accepted.command.name,
                      error_type=type(exc).__name__, error=str(exc)[:300])
            self._finish(accepted, future, started, error=f"driver error {type(exc).__name__}: {exc}"[:500])

    def _finish(self, accepted: Accepted, future: Future | None, started: float, *,
                result: dict | None = None, error: str | None = None) -> None:
        cmd = accepted.command
        status = "failed" if error is not None else "ok"
        self._count("failed" if error is not None else "executed")
        payload = CommandResult(
            id=cmd.id, name=cmd.name, target=cmd.target, status=status, detail=error or "",
            result=result, origin=accepted.origin, topic=accepted.topic, operator=accepted.operator,
            approved_by=accepted.approved_by, signed_by=accepted.signed_by, duration_ms=round((time.monotonic() - started) * 1000, 3),
        ).model_dump(mode="json")
        log.info("command_done", id=cmd.id, name=cmd.name, target=cmd.target, status=status,
                 detail=error, duration_ms=payload["duration_ms"])
        self._record("command.result", payload, "normal")
        if future is not None and not future.done():
            future.set_result(payload)

    def _reject(self, rej: CommandRejected, origin: str, topic: str | None, operator: str | None,
                future: Future | None) -> None:
        self._rejected[rej.reason] += 1
        self._last_rejection = {"reason": rej.reason, "id": rej.id, "at": time.time()}
        log.warning("command_rejected", reason=rej.reason, detail=rej.detail, id=rej.id, name=rej.name,
                    target=rej.target, origin=origin, topic=topic, operator=operator)
        payload = CommandResult(
            id=rej.id, name=rej.name, target=rej.target, status="rejected", reason=rej.reason,
            detail=rej.detail, result=rej.result, origin="local" if origin == "policy" else origin,
            topic=topic, operator=operator, signed_by=rej.signed_by,
        ).model_dump(mode="json")
        if self._limiter.allow():
            if rej.id is not None:
                self._record("command.result", payload, "normal")
            alarm = {k: payload[k] for k in ("id", "name", "target", "reason", "detail", "origin",
                                            "topic", "operator")}
            alarm["suppressed_before"] = self._limiter.take_suppressed()
            self._record("system.command_rejected", alarm, "alarm")
        if future is not None:
            future.set_result(payload)

    def _fail_unverified(self, exc: EdgeError, future: Future | None) -> None:
        log.error("command_verification_unavailable", error=str(exc))
        self._count("failed")
        if future is not None:
            future.set_exception(exc)

    def _record(self, type: str, payload: dict, priority: str) -> None:
        try:
            self._daemon.emit(type, payload, priority, SOURCE)
        except (StoreError, EventInvalid) as exc:  # full (non-alarm), closed, or not storable
            log.error("command_outcome_not_recorded", type=type, id=payload.get("id"), error=str(exc))
