"""Red team: a forced contact flaps (a loose switch, a crowbar worked, or a hostile module or controller).

Each forcing was an alarm, and an alarm is never evicted: a Modbus lane's forced input and each
passage without a grant, a serial controller's forced events, a sally port's door opening
without a release (with a ``sallyport.door`` record per change) were one alarm per poll or
event, a full store in a day. They now go through ``edge.ratelimit.ChangeFold`` like tamper
switches, each lane with a limit of its own for forcing: the first of a burst is alarmed at
once, the rest counted in one ``turnstile.flood`` (what: forced). ``turnstile.emergency`` (the
fire-alarm release) is not folded.

Against the real daemon: pymodbus's server as the relay/door module, the turnstile simulator on
a pty (rs485-bus) as the serial controller. Positive controls: a single forced passage (contact,
passage without a grant, serial event, forced door) is an alarm at once.
"""

from __future__ import annotations

import time

import pytest

from drivers.sim.modbus_io import ModbusIoSim
from edge.ratelimit import CHANGE_BURST
from tests._flood_helpers import WINDOW_S, modbus_flood_lane, serial_flood_site
from tests._gate_helpers import events, last_seq, wait_event

TOGGLES = 81  # on, off, on, ... ends on
PASSAGE_IN, FORCED = 0, 4
OUTER_CLOSED, INNER_CLOSED = 0, 1


def _at_once(state, type_: str, pred, mark: int, what: str) -> dict:
    """A single forcing: an alarm within a second or two (a few polls), not at a flood report."""
    started = time.monotonic()
    e = wait_event(state, type_, pred, after=mark, timeout=10, what=what)
    assert e["priority"] == "alarm", e
    assert time.monotonic() - started < WINDOW_S, "alarmed late (at a flood report?)"
    return e


def _check_folded(state, source: str, mark: int, alarm_type: str, forcings: int) -> list[dict]:
    """``forcings`` after ``mark``: bounded alarms, one flood (what: forced) with the rest counted."""
    def mine(e):
        return e["source"] == source and e["payload"].get("what") == "forced"

    ended = wait_event(state, "turnstile.flood", lambda e: mine(e) and e["payload"]["state"] == "ended",
                       after=mark, timeout=60, what=f"{source}: the forcing flood's end")
    time.sleep(0.5)  # a catch-up alarm is stored right after the end report
    alarms = [e for e in events(state, alarm_type, mark) if e["source"] == source]
    floods = [e for e in events(state, "turnstile.flood", mark) if mine(e)]
    assert floods[0]["payload"]["state"] == "started" and floods[0]["priority"] == "alarm", floods[0]
    assert [f["priority"] for f in floods[1:]] == ["normal"] * (len(floods) - 1)
    assert len(alarms) <= CHANGE_BURST + 2, [a["payload"] for a in alarms]  # not one per forcing
    assert all(a["priority"] == "alarm" for a in alarms)
    assert len(alarms) + ended["payload"]["total"] >= forcings, (len(alarms), ended["payload"])
    assert not [e for e in events(state, "turnstile.flood", mark) if e["source"] == source
                and e["payload"]["what"] != "forced"], "forcing counted as something else"
    return alarms


@pytest.fixture
def modbus_lane(base_config, edge_daemon):
    with modbus_flood_lane(base_config, edge_daemon, {"forced": FORCED}) as lane:
        yield lane


def test_a_flapping_forced_contact_on_a_modbus_lane_is_bounded_alarms(modbus_lane):
    module, daemon = modbus_lane
    state = daemon.state_dir
    mark = last_seq(state)

    # Positive controls: the forced contact, and a passage nobody was granted, each an alarm at once.
    module.set_input(FORCED, True)
    first = _at_once(state, "turnstile.forced", lambda e: "direction" not in e["payload"], mark, "forced contact")
    module.set_input(FORCED, False)
    assert module.wait_reads(2)
    module.set_input(PASSAGE_IN, True)
    _at_once(state, "turnstile.forced", lambda e: e["payload"].get("direction") == "in", first["seq"],
             "a passage without a grant")
    module.set_input(PASSAGE_IN, False)
    assert module.wait_reads(2)

    # The attack: the forced contact changes at every poll.
    for i in range(TOGGLES):
        module.set_input(FORCED, i % 2 == 0)
        assert module.wait_reads(2), "the driver is not polling"
    alarms = _check_folded(state, "lane1-ts", mark, "turnstile.forced", 2 + (TOGGLES + 1) // 2)
    seqs = [a["payload"]["device_seq"] for a in alarms]
    assert len(set(seqs)) == len(seqs), seqs
    health = daemon.cli("status", "--json").stdout
    assert '"forced_flooding": false' in health and '"forced_suppressed": 0' not in health, health


@pytest.fixture
def site(tmp_path, base_config, edge_daemon):
    with serial_flood_site(tmp_path, base_config, edge_daemon, "turnstile.online", "ts-in") as perimeter:
        yield perimeter


def test_a_serial_controller_reporting_forced_passages_in_a_flood_is_bounded_alarms(site):
    p, daemon = site
    state = daemon.state_dir
    controller = p.turnstiles["in"]
    mark = last_seq(state)

    def mine(e):
        return e["source"] == "ts-in"

    # Positive control: one forced passage is an alarm at once.
    controller.alarm("forced", direction="in")
    first = _at_once(state, "turnstile.forced", mine, mark, "forced passage")
    assert first["payload"]["direction"] == "in", first

    # The attack: forced events as fast as the controller is polled.
    for _ in range(TOGGLES):
        controller.alarm("forced", direction="in")
        time.sleep(0.01)  # within the controller's event queue
    _check_folded(state, "ts-in", mark, "turnstile.forced", 1 + TOGGLES)
    # the fire-alarm release is never folded, even in a forcing flood
    controller.alarm("emergency", arg=1)
    wait_event(state, "turnstile.emergency", lambda e: mine(e) and e["payload"]["active"], after=mark,
               timeout=10, what="the fire-alarm release")
    health = daemon.cli("status", "--json").stdout
    assert '"forced_flooding": false' in health, health


@pytest.fixture
def sally(base_config, edge_daemon):
    doors = ModbusIoSim().start()
    doors.set_input(OUTER_CLOSED, True)
    doors.set_input(INNER_CLOSED, True)
    base_config.update(drivers=[{
        "name": "sally", "kind": "sallyport.modbus", "host": "127.0.0.1", "tcp_port": doors.port,
        "outer": {"release": 0, "closed": OUTER_CLOSED}, "inner": {"release": 1, "closed": INNER_CLOSED},
        "release_s": 1.0, "poll_interval_s": 0.02, "reconnect_initial_s": 0.05, "flood_report_s": WINDOW_S}])
    daemon = edge_daemon(base_config)
    wait_event(daemon.state_dir, "turnstile.online", what="the sally port online")
    assert doors.wait_reads(3)
    yield doors, daemon
    doors.stop()


def test_a_sally_port_door_flapping_while_locked_is_bounded_alarms_and_its_state_recorded(sally):
    doors, daemon = sally
    state = daemon.state_dir
    mark = last_seq(state)

    # Positive control: a door opened without a release is an alarm at once, its changes recorded.
    doors.set_input(OUTER_CLOSED, False)
    first = _at_once(state, "sallyport.forced", lambda e: e["payload"]["door"] == "outer", mark, "forced door")
    wait_event(state, "sallyport.door", lambda e: e["payload"]["open"], after=mark, timeout=10, what="door open")
    doors.set_input(OUTER_CLOSED, True)
    wait_event(state, "sallyport.door", lambda e: not e["payload"]["open"], after=first["seq"], timeout=10,
               what="door closed")

    # The attack: the locked outer door's contact changes at every poll, left open.
    for i in range(TOGGLES):
        doors.set_input(OUTER_CLOSED, i % 2 == 1)
        assert doors.wait_reads(2), "the driver is not polling"
    _check_folded(state, "sally", mark, "sallyport.forced", 1 + (TOGGLES + 1) // 2)
    changes = [e for e in events(state, "sallyport.door", mark)]
    assert len(changes) <= CHANGE_BURST + 2, [c["payload"] for c in changes]  # not a record per poll
    # the state the flapping left (outer open, forced) is recorded and alarmed
    assert changes[-1]["payload"] == {"address": 1, "door": "outer", "open": True}, changes[-1]
    last_forced = events(state, "sallyport.forced", mark)[-1]
    assert last_forced["seq"] > changes[-1]["seq"] > first["seq"], last_forced  # raised by a flood report
    health = daemon.cli("status", "--json").stdout
    assert '"forced_flooding": false' in health, health
