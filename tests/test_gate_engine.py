"""The gate engine's state machines in this process: a real store and gate.db, driver events
appended to the store as the drivers would, and a fake command router that answers like the
drivers do (the whole chain with the real router and drivers is in test_gate_e2e.py)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

import pytest

from edge.commands.model import Command
from edge.commands.verify import Accepted
from edge.config import Settings
from edge.errors import CommandError
from edge.events import make_event
from edge.store import Store
from services.gate.contract import conforms
from services.gate.engine import GateEngine
from services.gate.state import GateState

LANE = {"turnstile": "ts", "camera": "cam", "flows": [
    {"direction": "in", "role": "visitor", "steps": [{"kind": "verify", "timeout_s": 5}, {"kind": "grant"}]},
    {"direction": "in", "role": "staff", "steps": [{"kind": "identify"}, {"kind": "grant"}]},
    {"direction": "out", "role": "any", "steps": [{"kind": "grant"}]}]}
DRIVERS = [{"name": "ts", "kind": "turnstile.serial"}, {"name": "cam", "kind": "camera.face"}]


class FakeRouter:
    """Answers driver commands like the drivers: ok (or what ``answers`` says), recorded in ``sent``."""

    def __init__(self):
        self.sent: list[dict] = []
        self.answers: dict[str, dict] = {}
        self.target = None

    def register_target(self, name, submit, effects, check=None):
        self.target = submit

    def submit_local(self, request, operator):
        self.sent.append(request)
        future: Future = Future()
        answer = self.answers.get(request["name"], {"status": "ok", "result": {"rtt_ms": 1.0}})
        future.set_result({"id": f"local-{len(self.sent)}", **answer})
        return future

    submit_policy = submit_local  # the engine's own driver commands

    def trusted_now(self):  # no time floor here: tests/security/test_xray_results.py sets the clock back
        return time.time()


class Harness:
    def __init__(self, state_dir, lane=LANE, **gate):
        self.settings = Settings(device_id="dev-1", site="site-1", role="gate", state_dir=state_dir,
                                 drivers=DRIVERS, gate={"lanes": {"lane1": lane}, **gate})
        self.store = Store(state_dir, device="dev-1", site="site-1")
        self.link = None
        self.router = FakeRouter()
        self.changed = threading.Condition()
        self.store.add_listener(self._wake)
        self.engine = GateEngine(self, self.router)

    def _wake(self, _events):
        with self.changed:
            self.changed.notify_all()

    def emit(self, type, payload, priority, source):
        return self.store.append(make_event(device="dev-1", site="site-1", type=type, source=source,
                                            payload=payload, priority=priority))

    def events(self, glob="gate.*"):
        return [json.loads(b) for _s, b, _a in self.store.tail(10_000, type_glob=glob)]

    def wait(self, glob, pred=lambda e: True, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [e for e in self.events(glob) if pred(e)]
                if found:
                    return found[-1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {glob} within {timeout}s: {self.events()}")
                self.changed.wait(min(remaining, 0.1))

    def command(self, name, args, operator="alice"):
        now = datetime.now(UTC)
        cmd = Command(id=f"local-test-{time.monotonic_ns()}", name=name, target="gate", args=args,
                      issued_at=now, expires_at=now + timedelta(seconds=60))
        return self.router.target(name, args, Accepted(cmd, "local", operator=operator)).result(10)

    def close(self):
        self.engine.stop()
        self.store.close()


@pytest.fixture
def gate(tmp_path):
    made = []

    def make(**kwargs):
        h = Harness(tmp_path / "state", **kwargs)
        h.engine.start()
        made.append(h)
        return h
    yield make
    for h in made:
        if h.engine._thread.is_alive():
            h.close()


def _present(h, booking="BK-1", subject="V-1"):
    return h.command("present", {"lane": "lane1", "booking_id": booking, "subject_id": subject})


def test_a_verify_that_never_comes_denies_after_its_timeout(gate):
    h = gate(lane={**LANE, "flows": [{"direction": "in", "role": "visitor", "steps": [
        {"kind": "verify", "timeout_s": 0.3}, {"kind": "grant"}]}]})
    started = _present(h)
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["reason"], d["approach_id"]) == ("deny", "step_timeout", started["approach_id"])
    assert d["steps"][0]["result"] == "timeout" and d["steps"][0]["command_id"] == "local-1"
    assert [r["name"] for r in h.router.sent] == ["verify"]  # never a grant
    for e in h.events():
        conforms(e)


def test_verified_face_grants_and_the_passage_is_recorded(gate):
    h = gate()
    _present(h)
    h.emit("biometric.verified", {"booking_id": "BK-1", "subject_id": "V-1", "distance": 0.3,
                                  "threshold": 0.5}, "normal", "cam")
    d = h.wait("gate.decision")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("grant", "flow_complete")
    grant = h.router.sent[-1]
    assert (grant["target"], grant["name"], grant["args"]) == ("ts", "grant", {"direction": "in", "passes": 1,
                                                                               "timeout_s": 30})
    h.emit("turnstile.passage", {"direction": "in"}, "normal", "ts")
    p = h.wait("gate.passage")["payload"]
    assert p["passed"] and p["approach_id"] == d["payload"]["approach_id"]


def test_another_bookings_result_is_not_taken_and_a_busy_lane_refuses_a_second_person(gate):
    h = gate()
    _present(h)
    with pytest.raises(CommandError, match="busy"):
        _present(h, "BK-2", "V-2")
    h.emit("biometric.verified", {"booking_id": "BK-9", "subject_id": "V-9"}, "normal", "cam")
    h.emit("biometric.verify_failed", {"booking_id": "BK-1", "subject_id": "V-1", "reason": "no_match"},
           "normal", "cam")
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["reason"]) == ("deny", "face_not_verified")
    assert "grant" not in [r["name"] for r in h.router.sent]


def test_a_hold_waits_for_an_officer_then_times_out_as_denied(gate):
    h = gate(lane={**LANE, "flows": [{"direction": "in", "role": "visitor", "steps": [
        {"kind": "verify", "on_fail": "hold"}, {"kind": "grant"}]}]}, hold_timeout_s=0.3)
    _present(h)
    h.emit("biometric.liveness_failed", {}, "alarm", "cam")
    held = h.wait("gate.decision", lambda e: e["payload"]["outcome"] == "hold")
    assert held["priority"] == "alarm" and held["payload"]["reason"] == "liveness_failed"
    d = h.wait("gate.decision", lambda e: e["payload"]["outcome"] == "deny")["payload"]
    assert d["reason"] == "hold_timeout" and d["approach_id"] == held["payload"]["approach_id"]


def test_an_officer_grants_a_held_person_with_a_reason_and_their_name(gate):
    h = gate(lane={**LANE, "flows": [{"direction": "in", "role": "visitor", "steps": [
        {"kind": "verify", "on_fail": "hold"}, {"kind": "grant", "timeout_s": 7}]}]})
    _present(h)
    h.emit("biometric.multiple_faces", {"faces": 2}, "alarm", "cam")
    h.wait("gate.decision", lambda e: e["payload"]["outcome"] == "hold")
    with pytest.raises(CommandError, match="reason"):
        h.command("override", {"lane": "lane1", "direction": "in", "action": "grant", "reason": ""})
    d = h.command("override", {"lane": "lane1", "direction": "in", "action": "grant", "reason": "known visitor"},
                  operator="officer7")
    assert (d["outcome"], d["reason"], d["override"]["operator"]) == ("grant", "officer_override", "officer7")
    assert h.router.sent[-1]["args"]["timeout_s"] == 7


def test_the_turnstile_refusing_the_grant_is_a_denial(gate):
    h = gate()
    h.router.answers["grant"] = {"status": "failed", "detail": "grant refused by the controller (NAK)"}
    h.command("present", {"lane": "lane1", "direction": "out"})
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["reason"], d["role"]) == ("deny", "turnstile_refused", "any")
    assert "NAK" in d["detail"]


def test_a_staff_identification_on_the_lane_camera_starts_and_completes_a_staff_approach(gate):
    h = gate()
    ident = h.emit("biometric.identified", {"subject_id": "S-1"}, "normal", "cam")
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["role"], d["subject"], d["started_by"]) == ("grant", "staff", "S-1", "camera")
    assert ident.id in d["evidence"]


def test_lockdown_denies_the_person_in_the_lane_and_everyone_after_and_refuses_overrides(gate):
    h = gate()
    _present(h)
    result = h.command("mode", {"mode": "lockdown", "reason": "incident"})
    assert result["lanes"]["lane1"] == {"command": "lockdown", "status": "ok", "detail": None, "emergency": False}
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["reason"], d["mode"]) == ("deny", "lockdown", "lockdown")
    started = h.command("present", {"lane": "lane1", "direction": "out"})
    assert started["decision"]["reason"] == "lockdown"
    with pytest.raises(CommandError, match="lockdown"):
        h.command("override", {"lane": "lane1", "direction": "out", "action": "grant", "reason": "let me out"})
    assert "grant" not in [r["name"] for r in h.router.sent]
    mode = h.wait("gate.mode")
    assert mode["priority"] == "alarm" and mode["payload"]["set_by"] == "alice"


def test_free_passage_grants_without_steps_and_the_mode_survives_a_restart(gate, tmp_path):
    h = gate()
    h.command("mode", {"mode": "free_passage", "reason": "evacuation drill"})
    assert h.router.sent[-1]["name"] == "unlock"
    started = h.command("present", {"lane": "lane1", "booking_id": "BK-1"})
    assert (started["decision"]["outcome"], started["decision"]["reason"]) == ("grant", "free_passage")
    h.close()
    again = gate()
    assert again.engine.status()["mode"] == "free_passage"
    again.wait("gate.mode", lambda e: e["payload"]["set_by"] == "restart")
    assert again.router.sent[0]["name"] == "unlock"  # re-applied: the controller may have lost power


def test_the_fire_alarm_is_only_recorded_and_ends_the_approach_in_progress(gate):
    h = gate()
    _present(h)
    sent = len(h.router.sent)
    alarm = h.emit("turnstile.emergency", {"address": 1, "active": True}, "alarm", "ts")
    e = h.wait("gate.emergency")
    assert e["priority"] == "alarm" and e["payload"]["evidence"] == [alarm.id] and e["payload"]["active"]
    d = h.wait("gate.decision")["payload"]
    assert (d["outcome"], d["reason"]) == ("deny", "emergency")
    assert len(h.router.sent) == sent  # nothing sent to the lane: the hardware's fail-safe wins


def test_approaches_cut_short_by_a_crash_are_recorded_as_denied_and_an_open_grant_is_closed(tmp_path):
    state = GateState(tmp_path / "state")
    body = {"id": "ap-1", "lane": "lane1", "direction": "in", "role": "visitor", "subject": "V-1",
            "booking_id": "BK-1", "started_by": "present", "started_at": datetime.now(UTC).isoformat(),
            "steps": [{"kind": "verify", "result": "ok", "evidence": ["e1"], "detail": "", "command_id": None,
                       "started_at": datetime.now(UTC).isoformat(), "ended_at": None},
                      {"kind": "grant", "result": "pending", "evidence": [], "detail": "", "command_id": None,
                       "started_at": datetime.now(UTC).isoformat(), "ended_at": None}]}
    state.save("ap-1", "lane1", "granting", body)
    state.save("ap-2", "lane1", "running", {**body, "id": "ap-2", "steps": body["steps"][:1]})
    state.close()
    h = Harness(tmp_path / "state")
    h.engine.start()
    try:
        h.wait("gate.decision", lambda e: e["payload"]["approach_id"] == "ap-2")
        decisions = [e["payload"] for e in h.events("gate.decision")]
        assert [(d["approach_id"], d["outcome"], d["reason"]) for d in decisions] == [
            ("ap-1", "deny", "interrupted"), ("ap-2", "deny", "interrupted")]
        assert decisions[0]["evidence"] == ["e1"]
        deadline = time.monotonic() + 5
        while not h.router.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(r["target"], r["name"]) for r in h.router.sent] == [("ts", "deny")]
        assert h.engine.state.unfinished() == []
    finally:
        h.close()


def test_stopping_the_daemon_mid_approach_denies_it(gate):
    h = gate()
    started = _present(h)
    h.close()
    store = Store(h.settings.state_dir, device="dev-1", site="site-1")
    try:
        [d] = [json.loads(b)["payload"] for _s, b, _a in store.tail(100, type_glob="gate.decision")]
    finally:
        store.close()
    assert (d["approach_id"], d["outcome"], d["reason"]) == (started["approach_id"], "deny", "stopping")


def test_an_unreadable_gate_db_is_set_aside_and_the_gate_starts_with_an_alarm(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "gate.db").write_bytes(b"this is not a database" * 100)
    h = Harness(tmp_path / "state")
    h.engine.start()
    try:
        lost = h.wait("gate.state_lost")
        assert lost["priority"] == "alarm" and lost["payload"]["mode"] == "normal"
        assert list((tmp_path / "state").glob("gate.db.bad-*"))
        started = _present(h, "BK-1", "V-1")
        assert started["state"] == "running"
    finally:
        h.close()


def test_an_alarm_failure_is_a_denial_recorded_as_an_alarm_and_an_officer_can_cut_a_step_short(gate):
    h = gate(lane={**LANE, "flows": [{"direction": "in", "role": "visitor", "steps": [
        {"kind": "verify", "on_fail": "alarm"}, {"kind": "grant"}]}]})
    _present(h)
    h.emit("biometric.liveness_failed", {}, "alarm", "cam")
    d = h.wait("gate.decision")
    assert (d["priority"], d["payload"]["outcome"], d["payload"]["reason"]) == ("alarm", "deny", "liveness_failed")
    _present(h, "BK-2", "V-2")  # waits for the face; the officer knows them
    d = h.command("override", {"lane": "lane1", "direction": "in", "action": "grant", "reason": "escorted"})
    assert [(s["kind"], s["result"]) for s in d["steps"]] == [("verify", "skipped"), ("grant", "ok")]


def test_an_officer_withdraws_an_open_grant(gate):
    h = gate()
    h.command("present", {"lane": "lane1", "direction": "out"})
    h.wait("gate.decision", lambda e: e["payload"]["outcome"] == "grant")
    h.command("override", {"lane": "lane1", "direction": "out", "action": "deny", "reason": "wrong person"})
    assert [(r["target"], r["name"]) for r in h.router.sent][-1] == ("ts", "deny")
    p = h.wait("gate.passage")["payload"]
    assert not p["passed"] and "withdrawn" in p["detail"]
