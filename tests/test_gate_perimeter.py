"""Cards at the gate end to end: libosdp readers (PD) on ptys, turnstile simulators, a real daemon.

Card read -> directory holder -> grant -> green LED -> passage -> occupancy; an
unknown card is red with a beep; anti-passback; `edge gate count` offline.
"""

from __future__ import annotations

import osdp
import pytest

from edge.gate.contract import conforms
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
