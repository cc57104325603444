"""Cards at the gate end to end: libosdp readers (PD) on ptys, turnstile simulators, a real daemon.

Card read -> directory holder -> grant -> green LED -> passage -> occupancy; an
unknown card is red with a beep; anti-passback; `edge gate count` offline.
"""

from __future__ import annotations

import osdp
import pytest

from services.gate.contract import conforms
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import Perimeter, beeped, gate_count, led_color

GREEN, RED = osdp.CommandLEDColor.Green, osdp.CommandLEDColor.Red


@pytest.fixture
def perimeter(tmp_path, base_config):
    p = Perimeter(tmp_path, base_config)
    yield p
    p.stop()


def _decision(state, after, what):
    return wait_event(state, "gate.decision", after=after, what=what, timeout=30)


def test_card_grant_green_wrong_card_red_and_anti_passback(perimeter, edge_daemon):
    daemon = edge_daemon(perimeter.config)
    state = daemon.state_dir
    wait_event(state, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
    wait_event(state, "reader.online", lambda e: e["source"] == "reader-out", what="reader-out online")

    mark = last_seq(state)
    perimeter.present("in", "P-1")
    d = _decision(state, mark, "P-1's entry")["payload"]
    assert (d["outcome"], d["reason"], d["role"], d["subject"], d["started_by"]) == \
        ("grant", "flow_complete", "card", "P-1", "reader")
    assert [s["kind"] for s in d["steps"]] == ["card", "grant"]
    assert led_color(perimeter.leds("in")) == GREEN
    moved = wait_event(state, "gate.occupancy", after=mark, what="P-1 counted inside")["payload"]
    assert (moved["person"], moved["from_zone"], moved["to_zone"]) == ("P-1", "outside", "inside")

    mark = last_seq(state)
    perimeter.present("in", card=(99, 4242))  # nobody's card
    d = _decision(state, mark, "the unknown card")
    assert (d["payload"]["outcome"], d["payload"]["reason"]) == ("deny", "unknown_credential")
    assert d["priority"] == "alarm"
    cmds = perimeter.leds("in")
    assert led_color(cmds) == RED and beeped(cmds)

    mark = last_seq(state)
    perimeter.present("in", "P-1")  # P-1 is inside: the card passed back to someone outside
    d = _decision(state, mark, "the passed-back card")["payload"]
    assert (d["outcome"], d["reason"]) == ("deny", "anti_passback")
    alarm = wait_event(state, "gate.anti_passback", after=mark, what="the anti-passback alarm")
    assert alarm["priority"] == "alarm" and alarm["payload"]["recorded_zone"] == "inside"
    assert led_color(perimeter.leds("in")) == RED

    assert gate_count(daemon)["zones"] == {"outside": 0, "inside": 1}
    mark = last_seq(state)
    perimeter.present("out", "P-1")
    assert _decision(state, mark, "P-1's exit")["payload"]["outcome"] == "grant"
    wait_event(state, "gate.occupancy", after=mark, what="P-1 counted outside")
    count = gate_count(daemon)
    assert count["zones"] == {"outside": 1, "inside": 0}
    for e in events(state, "gate.*"):
        conforms(e)


@pytest.mark.slow
def test_gate_count_after_200_random_moves_and_a_kill_with_the_broker_down(tmp_path, base_config, edge_daemon,
                                                                           mosquitto):
    import random

    from tests._perimeter_helpers import PEOPLE

    p = Perimeter(tmp_path, base_config)
    try:
        p.config["mqtt"] = {"brokers": [mosquitto.uri], "backoff_min_s": 0.1, "backoff_max_s": 0.5}
        for driver in p.config["drivers"]:  # a day's passages in a minute: far above a person's pace
            if driver["kind"] == "reader.osdp":
                driver.update(rate=20, burst=60)
        daemon = edge_daemon(p.config)
        state = daemon.state_dir
        for d in ("in", "out"):
            wait_event(state, "reader.online", lambda e, d=d: e["source"] == f"reader-{d}", what="readers online")
        rng, where, passbacks = random.Random(21), {}, 0  # the test's own model of the ledger
        for step in range(200):
            person = rng.choice(PEOPLE)
            direction = "out" if where.get(person) == "inside" else "in"
            if step % 10 == 9:  # now and then the card is used the wrong way: anti-passback
                direction = "in" if direction == "out" else "out"
            start, end = ("outside", "inside") if direction == "in" else ("inside", "outside")
            mark = last_seq(state)
            p.present(direction, person)
            d, moved = _outcome(state, mark, step)
            want_grant = where.get(person) in (None, start)  # never seen: the first move places them
            assert d["outcome"] == ("grant" if want_grant else "deny"), (step, person, direction, d)
            if not want_grant:
                assert d["reason"] == "anti_passback"
                passbacks += 1
                continue
            assert (moved["person"], moved["to_zone"]) == (person, end)
            where[person] = end
        inside = {k for k, v in where.items() if v == "inside"}
        want = {"outside": len(where) - len(inside), "inside": len(inside)}
        got = gate_count(daemon)
        assert got["zones"] == want and {x["person"] for x in got["people"] if x["zone"] == "inside"} == inside
        assert passbacks >= 10

        mosquitto.stop()
        daemon.kill()
        assert gate_count(daemon) == got  # daemon dead, network down: the roll-call still answers
        (state / "gate-occupancy.db").unlink()  # even the ledger's table lost: rebuilt from the store
        assert gate_count(daemon)["zones"] == want
        daemon.start(timeout=60)
        assert gate_count(daemon)["zones"] == want
        mark = last_seq(state)
        someone = sorted(inside)[0] if inside else PEOPLE[0]
        p.present("out" if someone in inside else "in", someone)  # the restarted gate knows where they are
        assert _decision(state, mark, "after the restart")["payload"]["outcome"] == "grant"
    finally:
        p.stop()



def _outcome(state, after: int, step: int, timeout: float = 30.0) -> tuple[dict, dict | None]:
    """(decision payload, occupancy payload or None): a denial, or a grant once it is counted."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = events(state, "gate.*", after)
        decision = next((e["payload"] for e in got if e["type"] == "gate.decision"), None)
        if decision is not None and decision["outcome"] != "grant":
            return decision, None
        moved = next((e["payload"] for e in got if e["type"] == "gate.occupancy"), None)
        if decision is not None and moved is not None:
            return decision, moved
        time.sleep(0.01)
    raise AssertionError(f"move {step}: no decision (and count) within {timeout}s")


def test_card_and_pin(tmp_path, base_config, edge_daemon):
    p = Perimeter(tmp_path, base_config, pins={"P-1": "97531", "P-2": "86420"},
                  steps=[{"kind": "card"}, {"kind": "pin", "timeout_s": 10}, {"kind": "grant", "timeout_s": 5}])
    try:
        daemon = edge_daemon(p.config)
        state = daemon.state_dir
        wait_event(state, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
        mark = last_seq(state)
        p.present("in", "P-1")
        wait_event(state, "reader.card", after=mark, what="the card read")
        p.readers["in"].keys("97531#")
        d = _decision(state, mark, "P-1 with the right PIN")["payload"]
        assert (d["outcome"], [s["kind"] for s in d["steps"]]) == ("grant", ["card", "pin", "grant"])
        assert led_color(p.leds("in")) == GREEN

        mark = last_seq(state)
        p.present("in", "P-2")
        wait_event(state, "reader.card", after=mark, what="the card read")
        p.readers["in"].keys("11111#")  # someone else's card, a guessed PIN
        d = _decision(state, mark, "P-2 with a wrong PIN")["payload"]
        assert (d["outcome"], d["reason"]) == ("deny", "pin_wrong")
        assert led_color(p.leds("in")) == RED

        mark = last_seq(state)
        p.present("in", "P-3")  # no PIN enrolled: a card alone is not enough on this lane
        wait_event(state, "reader.card", after=mark, what="the card read")
        p.readers["in"].keys("0000#")
        assert _decision(state, mark, "P-3")["payload"]["reason"] == "no_pin_enrolled"
        raw = b"".join(path.read_bytes() for path in state.glob("*.db*")) + daemon.log_path.read_bytes()
        assert b"97531" not in raw and b"11111" not in raw  # typed PINs are never stored nor logged
    finally:
        p.stop()


def test_soft_anti_passback_grants_and_raises_the_alarm(tmp_path, base_config, edge_daemon):
    p = Perimeter(tmp_path, base_config, anti_passback="soft")
    try:
        daemon = edge_daemon(p.config)
        state = daemon.state_dir
        wait_event(state, "reader.online", lambda e: e["source"] == "reader-in", what="reader-in online")
        mark = last_seq(state)
        p.present("in", "P-4")
        assert _decision(state, mark, "P-4's entry")["payload"]["outcome"] == "grant"
        wait_event(state, "gate.occupancy", after=mark, what="P-4 counted inside")
        mark = last_seq(state)
        p.present("in", "P-4")  # inside already: soft anti-passback lets them through, loudly
        d = _decision(state, mark, "the second inward use")["payload"]
        assert d["outcome"] == "grant"
        alarm = wait_event(state, "gate.anti_passback", after=mark, what="the anti-passback alarm")
        assert alarm["priority"] == "alarm" and alarm["payload"]["action"] == "grant"
    finally:
        p.stop()
