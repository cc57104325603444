"""Red team: a turnstile's tamper switch flaps (a loose contact, or a hostile module or controller).

Each tamper change was a ``turnstile.tamper`` alarm, and an alarm is never evicted: a Modbus
relay lane read its tamper input every poll (50 ms) and alarmed each edge; a serial controller
sending tamper on/off events as fast as it is polled had each one stored as an alarm. A day of
it is over a million alarms, a full store. Both now fold the changes like a reader's: the first
are alarmed one by one (CHANGE_BURST), the rest counted in one ``turnstile.flood`` (what:
status_changes), and the state they leave is alarmed at the flood's next report.

Against the real daemon: pymodbus's server as the relay module, the turnstile simulator on a pty
(rs485-bus) as the serial controller. Positive controls: a single change is an alarm at once; the
state the flapping leaves (tampered) is alarmed; the serial lane still grants a genuine card.
"""

from __future__ import annotations

import time

import pytest

from edge.ratelimit import CHANGE_BURST
from tests._flood_helpers import modbus_flood_lane, serial_flood_site
from tests._gate_helpers import events, last_seq, wait_event
from tests._perimeter_helpers import card_decision, card_of

TOGGLES = 81  # on, off, on, ... ends on: the lane is left tampered
TAMPER = 3


def _check_folded(state, source: str, mark: int, changes: int) -> None:
    """``changes`` tamper changes after ``mark``: bounded alarms, one flood, the final state alarmed."""
    def mine(e):
        return e["source"] == source

    ended = wait_event(state, "turnstile.flood", lambda e: mine(e) and e["payload"]["state"] == "ended",
                       after=mark, timeout=60, what=f"{source}: the flap's end")
    time.sleep(0.5)  # the catch-up alarm is stored right after the end report
    tampers = [e for e in events(state, "turnstile.tamper", mark) if mine(e)]
    floods = [e for e in events(state, "turnstile.flood", mark) if mine(e)]
    assert all(f["payload"]["what"] == "status_changes" for f in floods), floods
    assert floods[0]["payload"]["state"] == "started" and floods[0]["priority"] == "alarm", floods[0]
    assert [f["priority"] for f in floods[1:]] == ["normal"] * (len(floods) - 1)
    # every change an alarm or counted (a report may add an alarm of the state left so far)
    assert len([t for t in tampers if t["seq"] < ended["seq"]]) + ended["payload"]["total"] >= changes
    assert ended["payload"]["total"] >= changes - CHANGE_BURST - 1, ended["payload"]
    assert len(tampers) <= CHANGE_BURST + 2, [t["payload"] for t in tampers]  # not one per change
    assert all(t["priority"] == "alarm" for t in tampers)
    # the state the flap left (tampered) is the last alarm, raised by a flood report
    assert tampers[-1]["payload"]["active"] is True and tampers[-1]["seq"] > floods[0]["seq"], tampers[-1]
    seqs = [t["payload"]["device_seq"] for t in tampers]
    assert len(set(seqs)) == len(seqs), seqs  # no event number stored twice


@pytest.fixture
def modbus_lane(base_config, edge_daemon):
    with modbus_flood_lane(base_config, edge_daemon, {"tamper": TAMPER}) as lane:
        yield lane


def test_a_flapping_tamper_input_on_a_modbus_lane_is_bounded_alarms(modbus_lane):
    module, daemon = modbus_lane
    state = daemon.state_dir
    mark = last_seq(state)

    # Positive control: one change is an alarm at once, and so is its end.
    module.set_input(TAMPER, True)
    first = wait_event(state, "turnstile.tamper", after=mark, timeout=10, what="tamper")
    assert first["priority"] == "alarm" and first["payload"]["active"] is True, first
    module.set_input(TAMPER, False)
    wait_event(state, "turnstile.tamper", lambda e: not e["payload"]["active"], after=first["seq"],
               timeout=10, what="tamper cleared")

    # The attack: the contact changes at every poll, left open.
    for i in range(TOGGLES):
        module.set_input(TAMPER, i % 2 == 0)
        assert module.wait_reads(2), "the driver is not polling"
    _check_folded(state, "lane1-ts", mark, 2 + TOGGLES)
    health = daemon.cli("status", "--json").stdout
    assert '"tamper_flapping": false' in health and '"tamper": true' in health, health


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    with serial_flood_site(tmp_path, base_config, edge_daemon, "reader.online", "reader-in") as perimeter:
        yield perimeter


def test_a_serial_controller_flapping_its_tamper_events_is_bounded_alarms(site):
    p, daemon = site
    state = daemon.state_dir
    controller = p.turnstiles["in"]
    mark = last_seq(state)

    def mine(e):
        return e["source"] == "ts-in"

    # Positive control: one tamper event is an alarm at once, and so is its end.
    controller.alarm("tamper", arg=1)
    first = wait_event(state, "turnstile.tamper", mine, after=mark, timeout=10, what="tamper")
    assert first["priority"] == "alarm" and first["payload"]["active"] is True, first
    controller.alarm("tamper", arg=0)
    wait_event(state, "turnstile.tamper", lambda e: mine(e) and not e["payload"]["active"],
               after=first["seq"], timeout=10, what="tamper cleared")

    # The attack: tamper on/off events as fast as the controller is polled, left on.
    for i in range(TOGGLES):
        controller.alarm("tamper", arg=int(i % 2 == 0))
        time.sleep(0.01)  # within the controller's event queue
    _check_folded(state, "ts-in", mark, 2 + TOGGLES)
    health = daemon.cli("status", "--json").stdout
    assert '"tamper_flapping": false' in health, health

    # The lane still works: a genuine card is decided and granted as ever.
    assert card_decision(p, state, card_of("P-3"))["outcome"] == "grant"
