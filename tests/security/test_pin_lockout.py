"""Red team: a stolen card at a card + PIN lane, its finder walking through the PIN space.

Against a real gate daemon, the reader played by libosdp's own PD over the secure channel and
the directory signed by central: three wrong PINs in a row lock the holder's card out at this
gate; the fourth presentation is denied ``pin_locked`` at once, with no PIN asked for and none
checked, even when the right PIN is typed; the lockout is an alarm and survives a restart; one
operator cannot lift it. Positive controls: another holder is unaffected, a correct PIN before
the threshold grants and resets the count, and two operators can end a lockout early.
"""

from __future__ import annotations

import json
import os

import pytest

from edge.commands.local import send
from services.gate.contract import conforms
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import Perimeter
from tests._trust_helpers import SECOND_OPERATOR_CONFIG, approve

PINS = {"P-1": "97531", "P-2": "86420"}
STEPS = [{"kind": "card"}, {"kind": "pin", "timeout_s": 10}, {"kind": "grant", "timeout_s": 5}]


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    # anti-passback off: the same people enter again and again
    p = Perimeter(tmp_path, base_config, pins=PINS, steps=STEPS, anti_passback="off")
    for d in p.config["drivers"]:
        if d["kind"] == "reader.osdp":
            d.update(rate=20, burst=20)  # the test presents cards faster than a person; not what is tested
    p.config["commands"] = SECOND_OPERATOR_CONFIG
    daemon = edge_daemon(p.config)
    _online(daemon.state_dir)
    yield p, daemon
    p.stop()


def _online(state, after: int = 0) -> None:
    wait_event(state, "reader.online", lambda e: e["source"] == "reader-in", after=after, what="reader-in online")


def _attempt(p, state, person: str, pin: str | None) -> dict:
    """Present ``person``'s card and, if given, type ``pin``; the gate's decision (an event)."""
    mark = last_seq(state)
    p.present("in", person)
    wait_event(state, "reader.card", after=mark, what=f"{person}'s card read")
    if pin is not None:
        p.readers["in"].keys(pin + "#")
    return wait_event(state, "gate.decision", after=mark, what=f"{person}'s decision")


def _pin_checks(state) -> int:
    return len([e for e in events(state, "command.result") if e["payload"]["name"] == "check_pin"])


def test_three_wrong_pins_lock_the_card_out_and_a_restart_keeps_it(site):
    p, daemon = site
    state = daemon.state_dir

    # Positive control: two wrong, then the right PIN grants and starts the count again.
    for _ in range(2):
        assert _attempt(p, state, "P-2", "11111")["payload"]["reason"] == "pin_wrong"
    assert _attempt(p, state, "P-2", PINS["P-2"])["payload"]["outcome"] == "grant"
    for _ in range(2):  # 2 more wrong: had the count not been reset, the first would have locked
        assert _attempt(p, state, "P-2", "22222")["payload"]["reason"] == "pin_wrong"
    assert not events(state, "gate.pin_lockout")

    # The attack: the thief guesses three times...
    mark = last_seq(state)
    for guess in ("00000", "12345", "99999"):
        d = _attempt(p, state, "P-1", guess)["payload"]
        assert (d["outcome"], d["reason"]) == ("deny", "pin_wrong"), d
    assert "locked out" in d["detail"]
    alarm = wait_event(state, "gate.pin_lockout", after=mark, what="the lockout alarm")
    assert alarm["priority"] == "alarm" and alarm["payload"]["holder"] == "P-1"
    assert alarm["payload"]["wrong_pins"] == 3 and alarm["payload"]["lane"] == "lane-in"
    conforms(alarm)
    # ...and the fourth presentation, even with the right PIN typed, is denied without a check.
    checks = _pin_checks(state)
    mark = last_seq(state)
    locked = _attempt(p, state, "P-1", PINS["P-1"])
    d = locked["payload"]
    assert (d["outcome"], d["reason"], d["subject"]) == ("deny", "pin_locked", "P-1"), d
    assert "pin" not in [s["kind"] for s in d["steps"]], d
    conforms(locked)
    wait_event(state, "reader.pin_entered", after=mark, what="the typed PIN reaching the daemon")
    p.present("in", "P-2")  # a later approach: once it is decided, the typed PIN was handled long ago
    wait_event(state, "reader.card", after=mark, pred=lambda e: e["payload"]["credential"] == "7:1002",
               what="P-2's card read")
    p.readers["in"].keys(PINS["P-2"] + "#")
    other = wait_event(state, "gate.decision", lambda e: e["payload"]["subject"] == "P-2", after=mark,
                       what="P-2's decision")
    assert other["payload"]["outcome"] == "grant"  # another holder is unaffected
    assert _pin_checks(state) == checks + 1  # P-2's PIN was checked; the locked card's was not
    assert not [e for e in events(state, "gate.decision", mark) if e["payload"]["subject"] == "P-1"
                and e["id"] != locked["id"]]

    # A restart keeps the lockout (gate.db).
    mark = last_seq(state)
    daemon.stop()
    daemon.start(timeout=60)
    _online(state, after=mark)
    d = _attempt(p, state, "P-1", PINS["P-1"])["payload"]
    assert (d["outcome"], d["reason"]) == ("deny", "pin_locked"), d
    status = daemon.cli("gate", "status", "--json")
    assert "P-1" in status.stdout and "pin_lockouts" in status.stdout, status.stdout + status.stderr
    _engineer_sees_the_lockout(daemon)

    # One operator cannot lift the lockout: the clear is held for a second one.
    held = send(state, "gate", "clear_pin_lockout", {"holder": "P-1", "reason": "it is my own card"}, "alone")
    assert (held["status"], held["reason"]) == ("rejected", "under_signed"), held
    by_cli = daemon.cli("gate", "clear-pin-lockout", "P-1", "--reason", "holder verified at the desk")
    assert by_cli.returncode == 1 and "edge cmd approve approve-" in by_cli.stdout, by_cli.stdout + by_cli.stderr
    assert _attempt(p, state, "P-1", PINS["P-1"])["payload"]["reason"] == "pin_locked"
    assert not events(state, "gate.pin_lockout_cleared")

    if os.geteuid() != 0:
        return  # the second operator (uid nobody) needs root: the rest is the two-person positive control
    approved = approve(state, held["result"]["approval_id"])
    assert approved["status"] == "ok", approved
    cleared = wait_event(state, "gate.pin_lockout_cleared", what="the lockout cleared by two operators")
    assert cleared["payload"]["holder"] == "P-1" and cleared["payload"]["approved_by"]
    conforms(cleared)
    assert _attempt(p, state, "P-1", PINS["P-1"])["payload"]["outcome"] == "grant"


def _engineer_sees_the_lockout(daemon) -> None:
    """At 3 a.m., from the text alone: which card, until when, the command that ends it and the
    second person's approval; a clear for a card with nothing to clear asks nobody to approve."""
    gate = daemon.cli("gate", "status")
    assert gate.returncode == 0, gate.stderr
    line = next(line for line in gate.stdout.splitlines() if "PIN LOCKED: P-1" in line)
    assert "UTC" in line and "left" in line and "after 3 wrong PINs" in line, line
    assert "edge gate clear-pin-lockout P-1 --reason TEXT" in line
    assert "second operator" in gate.stdout and "edge cmd approve ID" in gate.stdout
    status = daemon.cli("status")
    assert "PIN-LOCKED cards: P-1 until" in status.stdout and "edge cmd approve ID" in status.stdout, status.stdout
    doctor = json.loads(daemon.cli("doctor", "--only", "components", "--json").stdout)
    assert any(c["ok"] and "PIN-LOCKED cards: P-1" in c["detail"] for c in doctor["checks"]), doctor
    for args in ((), ("--json",)):
        nothing = daemon.cli("gate", "clear-pin-lockout", "P-7", "--reason", "wrong holder typed", *args)
        assert nothing.returncode == 1 and "nothing to clear" in nothing.stdout + nothing.stderr, nothing
        assert "locked out now: P-1" in nothing.stdout + nothing.stderr
    assert json.loads(nothing.stdout)["ok"] is False
    assert "P-7" not in daemon.cli("cmd", "pending").stdout  # nobody was asked to approve it
