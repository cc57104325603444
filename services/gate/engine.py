"""The gate policy engine: driver events in, driver commands out, a decision record for each person.

Daemon component ``gate``. The store's commit listener and the command router
only enqueue; one thread owns every approach, so there are no locks around
the state machines. Commands to drivers go through the command router (the
path central's signed commands take), and their results come back as queue
items, so a slow turnstile never stalls another lane. Every wait has a
deadline; a crash leaves approaches in ``gate.db`` that the next start records
as denied (see ``state``).
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import structlog

from edge.errors import CommandError, EdgeError, StoreError
from edge.supervisor import SupervisedThread
from services.gate import commands
from services.gate._scans import scan_problem
from services.gate.approach import Approach, decision_payload
from services.gate.perimeter import READER_EVENTS, Perimeter
from services.gate.settings import GateSettings
from services.gate.state import GateState
from services.gate.visits import SWAP_REASONS, Visits

log = structlog.get_logger("edge.gate")
SOURCE = "gate"
OPERATOR = "gate-policy"  # how the engine's own driver commands are recorded in command.result
_CAMERA = {"biometric.verified", "biometric.verify_failed", "biometric.identified",
           "biometric.liveness_failed", "biometric.multiple_faces"}
_TURNSTILE = {"turnstile.granted", "turnstile.passage", "turnstile.grant_timeout", "turnstile.emergency"}
_PASSAGE_GRACE_S = 5.0
_STOP = object()


class GateEngine:
    """Component ``gate``: runs each lane's flows, modes, overrides; records ``gate.*`` events."""

    name = "gate"

    def __init__(self, daemon, router):
        self._daemon = daemon
        self.settings: GateSettings = daemon.settings.gate
        self.lanes = self.settings.lanes
        self._router = router
        self._queue: queue.Queue = queue.Queue()
        self._thread = SupervisedThread(self._work, name="gate", emit=daemon.emit,
                                        on_change=getattr(daemon, "notify_health_changed", None))
        self.state, self.state_problem = GateState.open(daemon.settings.state_dir)
        self.mode: dict[str, Any] = {"mode": self.settings.initial_mode, "set_by": "config", "reason": None}
        self.approaches: dict[str, Approach] = {}
        self.passing: dict[str, dict[str, Any]] = {}
        self.emergency: dict[str, bool] = dict.fromkeys(self.lanes, False)
        self.counts: Counter = Counter()
        self.last_decision: dict[str, Any] | None = None
        self._results: dict[str, str] = {}  # command id -> id of its command.result event
        self._drivers: dict[str, str] = {}  # driver name -> lane
        self._early: dict[str, Any] = {}  # lane -> passage stored before its grant's result arrived
        self.perimeter = Perimeter(self, daemon)
        self.visits = Visits(self, daemon.settings.state_dir)
        for lane_name, lane in self.lanes.items():
            for name in [lane.turnstile, lane.camera, lane.reader, *lane.scanners]:
                if name:
                    self._drivers[name] = lane_name
        router.register_target("gate", self._submit, commands.effects(self.lanes),
                               check=lambda name, args: commands.check(self.lanes, name, args))

    # -- component -------------------------------------------------------------------------

    def start(self) -> None:
        saved = self.state.mode()
        if saved is not None:
            self.mode = saved
        self._daemon.store.add_listener(self._on_commit)
        recovered = self._recover()
        self.perimeter.start()
        if self.state_problem:
            log.error("gate_state_unreadable", error=self.state_problem)
            self.emit("gate.state_lost", {"problem": self.state_problem, "mode": self.mode["mode"],
                                          "detail": "gate.db was unreadable and set aside: the saved mode and "
                                                    "any approach cut short by a crash are lost; check the "
                                                    "mode (edge gate status) and the lanes"}, "alarm")
        self._thread.start()
        if self.mode["mode"] != "normal":  # a controller may have been power-cycled meanwhile
            self._queue.put(("call", lambda: commands.apply_mode(self, self.mode["mode"], None, "restart")))
        log.info("gate_started", mode=self.mode["mode"], lanes=list(self.lanes), interrupted=recovered)

    def stop(self) -> None:
        self._thread.stop()
        self._queue.put(_STOP)
        self._thread.join(10)
        for ap in list(self.approaches.values()):
            self.decide(ap, "deny", "stopping", "the daemon stopped during this approach")
        self.state.close()
        self.perimeter.stop()

    def status(self) -> dict[str, Any]:
        lanes = {}
        for name, lane in self.lanes.items():
            ap = self.approaches.get(name)
            lanes[name] = {"turnstile": lane.turnstile, "camera": lane.camera, "scanners": list(lane.scanners),
                           "emergency": self.emergency.get(name, False),
                           "approach": ap.summary() if ap else None,
                           "passing": dict(passing) if (passing := self.passing.get(name)) else None}
        return {"status": "ok" if self._thread.is_alive() else "down", "mode": self.mode["mode"],
                "mode_set_by": self.mode.get("set_by"), "mode_reason": self.mode.get("reason"),
                "online": self.online, "lanes": lanes, "decisions": dict(self.counts),
                "directory": self.perimeter.directory.summary(), **self.perimeter.pins.status(),
                "occupancy": self.perimeter.occupancy.count(self.settings.zones)["zones"]}

    @property
    def online(self) -> bool:
        link = self._daemon.link
        return bool(link is not None and link.connected)

    # -- intake (other threads: only enqueue) -------------------------------------------------

    def _on_commit(self, events) -> None:
        for event in events:
            if event.source in self._drivers and (event.type in _CAMERA or event.type in _TURNSTILE
                                                  or event.type in READER_EVENTS or event.type == "xray.scan"):
                self._queue.put(("event", event))
            elif event.type == "command.result" and event.payload.get("operator") == OPERATOR:
                self._queue.put(("result", event))

    def _submit(self, name: str, args: dict[str, Any], accepted) -> Future:
        future: Future = Future()
        self._queue.put(("command", name, args, accepted, future))
        return future

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the engine thread (from any thread)."""
        self._queue.put(("call", fn))

    def trusted_now(self) -> float:
        """UNIX time to judge a card's validity and a scan's age by: never before the device's
        time floor (the command router's trusted_now), so a clock set back revives nothing."""
        return self._router.trusted_now()

    def send(self, target: str, name: str, args: dict[str, Any], reason: str,
             then: Callable[[dict[str, Any]], None]) -> None:
        """A driver command through the router; ``then(result)`` runs later on the engine thread."""
        future = self._router.submit_policy({"target": target, "name": name, "args": args, "reason": reason},
                                           OPERATOR)

        def done(f: Future) -> None:
            try:
                result = f.result()
            except EdgeError as exc:
                result = {"status": "failed", "detail": str(exc), "id": None}
            self._queue.put(("call", lambda: then(result)))
        future.add_done_callback(done)

    def result_event(self, result: dict[str, Any]) -> list[str]:
        """The id of the command.result event recorded for a driver command, as evidence."""
        event_id = self._results.pop(result.get("id") or "", None)
        return [event_id] if event_id else []

    # -- the engine thread ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._next_wait())
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            try:
                if item is not None:
                    self._dispatch(item)
                self._expire()
            except EdgeError as exc:  # e.g. the store refused a record: keep deciding the other lanes
                self.counts["errors"] += 1
                log.error("gate_step_failed", error=str(exc)[:300])

    def _dispatch(self, item: tuple) -> None:
        kind = item[0]
        if kind == "event":
            self._on_event(item[1])
        elif kind == "result":
            self._results[item[1].payload.get("id")] = item[1].id
            if len(self._results) > 1000:  # results nobody waits for any more
                self._results.pop(next(iter(self._results)))
        elif kind == "call":
            item[1]()
        elif kind == "command":
            _, name, args, accepted, future = item
            try:
                commands.run(self, name, args, accepted, future)
            except CommandError as exc:
                if not future.done():
                    future.set_exception(exc)

    def _next_wait(self) -> float:
        deadlines = [ap.deadline for ap in self.approaches.values() if ap.deadline is not None]
        deadlines += [p["deadline"] for p in self.passing.values()]
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - time.monotonic()))

    def _expire(self) -> None:
        now = time.monotonic()
        for lane, ap in list(self.approaches.items()):
            if ap.deadline is None or ap.deadline > now:
                continue
            ap.deadline = None
            if ap.state == "held":
                self.decide(ap, "deny", "hold_timeout",
                            f"no officer decided within {self.settings.hold_timeout_s:g}s")
            elif ap.state == "granting":
                self.decide(ap, "deny", "grant_unconfirmed", "the turnstile did not confirm the grant in time")
                self.send(self.lanes[lane].turnstile, "deny", self.address(lane), "grant unconfirmed",
                          lambda r: None)
            else:
                step = ap.step
                self.fail(ap, "step_timeout", f"{step.kind}: no result within {step.timeout_s:g}s", "timeout")
        for lane, p in list(self.passing.items()):
            if p["deadline"] <= now:
                self.passed(lane, None, "no passage seen before the grant ran out")
        self.visits.tick()

    # -- events ---------------------------------------------------------------------------------

    def _on_event(self, event) -> None:
        lane_name = self._drivers[event.source]
        lane, ap, t = self.lanes[lane_name], self.approaches.get(lane_name), event.type
        if t == "turnstile.emergency":
            self._on_emergency(lane_name, event)
        elif t in ("turnstile.passage", "turnstile.grant_timeout"):
            if lane_name in self.passing and event.payload.get("direction") == self.passing[lane_name]["direction"]:
                self.passed(lane_name, event, "" if t == "turnstile.passage" else "nobody passed: grant timed out")
            elif ap is not None and ap.state == "granting" and event.payload.get("direction") == ap.direction:
                self._early[lane_name] = event  # it overtook the grant's result on the way here
        elif t == "turnstile.granted":
            if ap is not None and ap.state == "granting" and ap.record is not None:
                ap.record.evidence.append(event.id)
        elif t == "reader.card" and event.source == lane.reader:
            self.perimeter.on_card(lane_name, event)
        elif t == "reader.pin_entered" and event.source == lane.reader:
            if ap is not None and ap.state == "running" and ap.step is not None and ap.step.kind == "pin":
                self.perimeter.pin_entered(ap, event)
        elif t == "biometric.identified" and event.source == lane.camera:
            if ap is None and lane.flow(lane.camera_direction, "staff") is not None:
                self.begin(Approach(lane_name, lane.camera_direction, "staff",
                                    lane.flow(lane.camera_direction, "staff"),
                                    subject=event.payload.get("subject_id"), started_by="camera"), event.id)
        elif ap is not None and ap.state == "running" and ap.step is not None:
            self._step_event(ap, event)

    def _step_event(self, ap: Approach, event) -> None:
        kind, t, p = ap.step.kind, event.type, event.payload
        if kind in ("verify", "face") and event.source == self.lanes[ap.lane].camera:
            if t in ("biometric.verified", "biometric.verify_failed"):
                if p.get("booking_id") != ap.booking_id or p.get("subject_id") != ap.subject:
                    return  # another presentation's result
                if t == "biometric.verify_failed" and p.get("reason") in SWAP_REASONS:
                    self.visits.swap_suspected(ap, event)
                    return
                if t == "biometric.verified":
                    self.step_ok(ap, [event.id], f"distance {p.get('distance')} <= {p.get('threshold')}")
                else:
                    self.fail(ap, "face_not_verified", f"verify_failed: {p.get('reason')}", evidence=[event.id])
            elif t == "biometric.liveness_failed":
                self.fail(ap, "liveness_failed", "the presentation-attack check failed", evidence=[event.id])
            elif t == "biometric.multiple_faces":
                self.fail(ap, "multiple_faces", f"{p.get('faces')} faces in a one-person lane", evidence=[event.id])
        elif kind == "xray" and t == "xray.scan" and p.get("subject") == ap.subject:
            stale = scan_problem(event, lane=ap.lane, scanners=self.lanes[ap.lane].scanners,
                                 freshness_s=self.settings.scan_freshness_s,
                                 skew_s=self._daemon.settings.trust.clock_skew_s, now=self.trusted_now())
            if stale is not None:
                self.fail(ap, stale[0], stale[1], evidence=[event.id])
            elif p.get("decision") == "clear":
                self.step_ok(ap, [event.id], f"scan {p.get('scan_id')}: {p.get('outcome')}, operator: clear")
            else:
                self.fail(ap, "scan_not_clear", f"scan {p.get('scan_id')}: {p.get('outcome')}, "
                          f"operator: {p.get('decision')}", evidence=[event.id])

    def _on_emergency(self, lane_name: str, event) -> None:
        active = bool(event.payload.get("active"))
        self.emergency[lane_name] = active
        self.emit("gate.emergency", {"lane": lane_name, "active": active, "mode": self.mode["mode"],
                                     "evidence": [event.id], "online": self.online,
                                     "detail": "fire-alarm free swing: the hardware's fail-safe wins; "
                                               "recorded only, no command sent"}, "alarm")
        ap = self.approaches.get(lane_name)
        if active and ap is not None:
            self.decide(ap, "deny", "emergency", "the fire alarm opened the lane during this approach")

    def passed(self, lane_name: str, event, detail: str) -> None:
        p = self.passing.pop(lane_name)
        passed = event is not None and event.type == "turnstile.passage"
        self.emit("gate.passage", {"approach_id": p["approach_id"], "lane": lane_name, "direction": p["direction"],
                                   "passed": passed, "evidence": [event.id] if event is not None else [],
                                   "detail": detail or "went through"}, "normal")
        if passed:
            self.perimeter.passed(lane_name, p, event)
            self.visits.left(lane_name, p)

    # -- approaches -----------------------------------------------------------------------------

    def begin(self, ap: Approach, start_event: str | None = None) -> Approach:
        """A person starts at a lane; mode and emergency may decide at once."""
        self.approaches[ap.lane] = ap
        ap.start_event = start_event
        mode = self.mode["mode"]
        if self.emergency.get(ap.lane):
            self.decide(ap, "deny", "emergency", "fire-alarm free swing active on this lane; nothing granted")
        elif mode in ("lockdown", "out_of_service"):
            self.decide(ap, "deny", mode, f"the gate is in {mode} mode ({self.mode.get('reason') or 'no reason'})")
        elif mode == "free_passage":
            self.decide(ap, "grant", "free_passage", "free passage mode: the lane is open, no steps taken")
        elif self.perimeter.passback_ok(ap):
            self.advance(ap)
        return ap

    def advance(self, ap: Approach) -> None:
        """Run steps until one has to wait (or the flow ends in a grant)."""
        while (step := ap.step) is not None:
            if step.kind == "identify":
                ap.begin(step, None).end("ok", "identified 1:N by the lane camera",
                                         [ap.start_event] if ap.start_event else [])
                ap.index += 1
            elif step.kind == "dose_check":
                if not self._dose_check(ap):
                    return
                ap.index += 1
            elif step.kind == "card":
                self.perimeter.card_step(ap, step)
                ap.index += 1
            elif step.kind in ("verify", "face"):
                self._verify(ap, step)
                return
            elif step.kind == "pin":
                ap.begin(step, step.timeout_s)
                self.save(ap)
                return
            elif step.kind == "xray":
                ap.begin(step, step.timeout_s)
                self.save(ap)
                return
            else:
                self.grant(ap, step.passes, int(step.timeout_s))
                return

    def _verify(self, ap: Approach, step) -> None:
        rec = ap.begin(step, step.timeout_s)
        self.save(ap)
        camera = self.lanes[ap.lane].camera

        def done(result: dict[str, Any]) -> None:
            rec.command_id = result.get("id")
            rec.evidence += self.result_event(result)
            if result.get("status") != "ok" and ap.record is rec:
                self.fail(ap, "camera_unavailable", f"verify not taken: {result.get('detail')}")
        self.send(camera, "verify", {"subject_id": ap.subject, "booking_id": ap.booking_id,
                                     "ttl_s": step.timeout_s, **self.visits.verify_args(ap)},
                  f"gate approach {ap.id}", done)

    def _dose_check(self, ap: Approach) -> bool:
        from services.xray import check_with

        rec = ap.begin(ap.step, None)
        check = check_with(self._daemon.component("xray"), ap.subject).as_dict()
        event = self.emit("gate.dose_check", {"approach_id": ap.id, "lane": ap.lane, **check}, "normal")
        if check["allowed"]:
            rec.end("ok", check["reason"], [event.id] if event else [])
            return True
        reason = "dose_limit" if check.get("decided", True) else "dose_check_unavailable"
        self.fail(ap, reason, check["reason"], evidence=[event.id] if event else [])
        return False

    def step_ok(self, ap: Approach, evidence: list[str], detail: str) -> None:
        ap.record.end("ok", detail, evidence)
        ap.deadline = None
        ap.index += 1
        self.advance(ap)

    def fail(self, ap: Approach, reason: str, detail: str, result: str = "failed",
             evidence: list[str] | None = None) -> None:
        """The current step failed: deny, hold for an officer, or deny as an alarm (its on_fail)."""
        if ap.record is not None:
            ap.record.end(result, detail, evidence)
        step = ap.step
        on_fail = "deny" if step is None else (step.on_timeout if result == "timeout" else step.on_fail)
        if on_fail == "hold":
            ap.state, ap.deadline = "held", time.monotonic() + self.settings.hold_timeout_s
            self.save(ap)
            self.record(ap, "hold", reason, detail + "; held for an officer (edge gate override)", "alarm")
        else:
            self.decide(ap, "deny", reason, detail, "alarm" if on_fail == "alarm" else "normal")

    def grant(self, ap: Approach, passes: int, timeout_s: int, override: dict | None = None,
              future: Future | None = None) -> None:
        """Open the turnstile for this approach; the decision is recorded on the controller's ACK."""
        from services.gate.settings import Step

        if ap.record is not None:  # an officer cut the step short
            ap.record.end("skipped", "officer override" if override else "granted")
        ap.state = "granting"
        self._early.pop(ap.lane, None)
        rec = ap.begin(Step(kind="grant", timeout_s=timeout_s, passes=passes), self.settings.command_timeout_s)
        self.save(ap)  # on disk before the turnstile may open: a crash from here on ends as denied
        args = {"direction": ap.direction, "passes": passes, "timeout_s": timeout_s, **self.address(ap.lane)}

        def done(result: dict[str, Any]) -> None:
            rec.command_id = result.get("id")
            if self.approaches.get(ap.lane) is not ap or ap.state != "granting":
                return  # already decided (timeout, stop)
            if result.get("status") == "ok":
                rec.end("ok", f"controller ACK in {(result.get('result') or {}).get('rtt_ms')} ms",
                        self.result_event(result))
                reason = "officer_override" if override else "flow_complete"
                self.decide(ap, "grant", reason, override["reason"] if override else "every step passed",
                            override=override)
                if ap.lane in self.passing:  # the controller now holds this grant, not the earlier one
                    self.passed(ap.lane, None, "superseded by the next grant before a passage was seen")
                self.passing[ap.lane] = {"approach_id": ap.id, "direction": ap.direction,
                                         "subject": ap.subject, "role": ap.role, "booking_id": ap.booking_id,
                                         "deadline": time.monotonic() + timeout_s + _PASSAGE_GRACE_S}
                if (early := self._early.pop(ap.lane, None)) is not None:
                    self.passed(ap.lane, early, "" if early.type == "turnstile.passage"
                                else "nobody passed: grant timed out")
            else:
                rec.end("failed", str(result.get("detail")), self.result_event(result))
                self.decide(ap, "deny", "turnstile_refused", str(result.get("detail")), override=override)
            if future is not None and not future.done():
                future.set_result(self.last_decision)
        self.send(self.lanes[ap.lane].turnstile, "grant", args, f"gate approach {ap.id}", done)

    def address(self, lane_name: str) -> dict[str, Any]:
        address = self.lanes[lane_name].turnstile_address
        return {"address": address} if address else {}

    def decide(self, ap: Approach, outcome: str, reason: str, detail: str, priority: str = "normal",
               override: dict | None = None) -> None:
        """Record the final decision of an approach and let the lane take the next person."""
        pending = ap.record
        if pending is not None:
            pending.end("skipped", f"not finished: {reason}")
        self.record(ap, outcome, reason, detail, priority, override)
        if self.approaches.get(ap.lane) is ap:
            del self.approaches[ap.lane]
        self.state.forget(ap.id)

    def record(self, ap: Approach, outcome: str, reason: str, detail: str, priority: str = "normal",
               override: dict | None = None) -> None:
        payload = decision_payload(ap.body(), outcome=outcome, reason=reason, detail=detail,
                                   mode=self.mode["mode"], online=self.online, override=override)
        payload["duration_ms"] = round((time.monotonic() - ap.t0) * 1000, 1)
        self.last_decision = payload
        self.counts[outcome] += 1
        log.info("gate_decision", lane=ap.lane, approach=ap.id, outcome=outcome, reason=reason,
                 direction=ap.direction, role=ap.role)
        self.emit("gate.decision", payload, "alarm" if outcome == "hold" else priority)
        self.perimeter.decided(ap, outcome)

    def save(self, ap: Approach) -> None:
        self.state.save(ap.id, ap.lane, ap.state, ap.body())

    def emit(self, type: str, payload: dict[str, Any], priority: str):
        try:
            return self._daemon.emit(type, payload, priority, SOURCE)
        except StoreError as exc:  # full (not for alarms) or closing: say so, keep the lane working
            self.counts["not_recorded"] += 1
            log.error("gate_event_not_recorded", type=type, error=str(exc))
            return None

    def _recover(self) -> int:
        """Approaches a crash cut short: each is recorded as denied, never resumed."""
        rows = self.state.unfinished()
        for approach_id, state, body in rows:
            step = next((s["kind"] for s in body.get("steps", []) if s.get("result") == "pending"), None)
            payload = decision_payload(body, outcome="deny", reason="interrupted",
                                       detail=f"the daemon stopped in state {state!r} (step {step}); "
                                              "a cut-short approach is never resumed", mode=self.mode["mode"],
                                       online=self.online)
            self.emit("gate.decision", payload, "normal")
            self.counts["deny"] += 1
            if state == "granting" and body.get("lane") in self.lanes:
                # The grant may have reached the controller: close it again.
                lane = body["lane"]
                self._queue.put(("call", lambda lane=lane: self.send(
                    self.lanes[lane].turnstile, "deny", self.address(lane), "interrupted grant", lambda r: None)))
            self.state.forget(approach_id)
        return len(rows)
