"""``turnstile.modbus`` against pymodbus's own server playing a relay/input module."""

from __future__ import annotations

import pytest

from edge.errors import CommandError
from tests._modbus_helpers import COIL_IN, COIL_OUT, FIRE, FORCED, PASS_IN, PASS_OUT, TAMPER, IoLane


@pytest.fixture
def lane():
    lane = IoLane().start()
    lane.wait("turnstile.online")
    yield lane
    lane.stop()


def _pulses(sim, coil):
    """(on, off) times of each release pulse seen on ``coil``."""
    out, on = [], None
    for t, c, level in list(sim.coil_log):
        if c != coil:
            continue
        if level and on is None:
            on = t
        elif not level and on is not None:
            out.append((on, t))
            on = None
    return out


def test_grant_is_a_release_pulse_on_the_direction_coil(lane):
    result = lane.driver.handle("grant", {"direction": "in", "timeout_s": 5})
    assert result["ok"] and result["command"] == "grant"
    lane.sim.wait_coil(COIL_IN, True)
    granted = lane.wait("turnstile.granted")[0]["payload"]
    assert granted == {"address": 1, "direction": "in", "passes": 1, "timeout_s": 5}

    def pulse_done():
        return _pulses(lane.sim, COIL_IN)
    assert lane.sim.wait_reads(30)
    (on, off), = pulse_done()
    assert 0.18 <= off - on <= 1.0, f"pulse of {off - on:.3f}s for a 0.2s pulse_s"
    assert not _pulses(lane.sim, COIL_OUT) and not lane.sim.coils[COIL_OUT]


def test_passage_input_is_a_passage_event_within_the_grant(lane):
    lane.driver.handle("grant", {"direction": "out", "timeout_s": 5})
    lane.sim.pulse_input(PASS_OUT)
    passage = lane.wait("turnstile.passage")[0]
    assert passage["payload"]["direction"] == "out" and passage["payload"]["counter"] == 1
    assert not lane.of("turnstile.forced")
    assert lane.driver.handle("read_counters", {})["counters"] == {"in": 0, "out": 1}


def test_passage_without_grant_is_forced(lane):
    lane.sim.pulse_input(PASS_IN)
    lane.wait("turnstile.passage", direction="in")
    forced = lane.wait("turnstile.forced")[0]
    assert forced["priority"] == "alarm" and forced["payload"]["direction"] == "in"


def test_nobody_passes_grant_times_out(lane):
    lane.driver.handle("grant", {"direction": "in", "timeout_s": 1})
    lane.wait("turnstile.grant_timeout", timeout=5, direction="in")


def test_contacts_forced_tamper_fire_alarm(lane):
    lane.sim.pulse_input(FORCED)
    assert lane.wait("turnstile.forced")[0]["priority"] == "alarm"
    lane.sim.set_input(TAMPER, True)
    assert lane.wait("turnstile.tamper", active=True)[0]["priority"] == "alarm"
    lane.sim.set_input(FIRE, True)
    lane.wait("turnstile.emergency", active=True)
    with pytest.raises(CommandError, match="fire-alarm"):
        lane.driver.handle("lockdown", {})
    lane.sim.set_input(FIRE, False)
    lane.wait("turnstile.emergency", active=False)
    lane.driver.handle("lockdown", {})
    with pytest.raises(CommandError, match="lockdown"):
        lane.driver.handle("grant", {"direction": "in"})
    lane.driver.handle("release", {})
    lane.driver.handle("grant", {"direction": "in"})


def test_silent_module_is_a_fault_and_the_lane_out_of_service(lane):
    lane.sim.silent = True
    fault = lane.wait("turnstile.fault", code=1)[0]
    assert fault["priority"] == "alarm"
    lane.wait("turnstile.offline")
    assert lane.driver.health()["in_service"] is False
    with pytest.raises(CommandError, match="out of service"):
        lane.driver.handle("grant", {"direction": "in"})
    assert not _pulses(lane.sim, COIL_IN)
    lane.sim.silent = False  # it answers again: back in service, coils switched off first
    lane.wait("turnstile.fault", code=0)
    lane.wait("turnstile.online", count=2)
    assert lane.driver.health()["in_service"] is True
    lane.driver.handle("grant", {"direction": "in"})
    lane.sim.wait_coil(COIL_IN, True)


def test_unlock_holds_both_relays_and_lock_drops_them(lane):
    lane.driver.handle("unlock", {})
    assert lane.sim.coils[COIL_IN] and lane.sim.coils[COIL_OUT]
    lane.sim.pulse_input(PASS_IN)
    lane.wait("turnstile.passage")
    assert not lane.of("turnstile.forced")  # free passage: nobody forced anything
    lane.driver.handle("lock", {})
    assert not lane.sim.coils[COIL_IN] and not lane.sim.coils[COIL_OUT]


def test_config_refuses_one_relay_for_both_ways():
    from drivers.io.config import ModbusTurnstileConfig

    with pytest.raises(ValueError, match="different relays"):
        ModbusTurnstileConfig(name="x", kind="turnstile.modbus", host="h",
                              coils={"release_in": 0, "release_out": 0},
                              inputs={"passage_in": 0, "passage_out": 1})


def test_rtu_on_a_serial_line():
    """The same driver over Modbus RTU: pymodbus's serial server at the other end of a pty cable."""
    import threading
    from types import SimpleNamespace

    import structlog

    from drivers.io.config import ModbusTurnstileConfig
    from drivers.io.driver import ModbusTurnstileDriver
    from drivers.sim.modbus_io import ModbusIoSim
    from edge.driver import DriverContext

    sim = ModbusIoSim(rtu=True).start()
    events, stopping = [], threading.Event()
    config = ModbusTurnstileConfig(name="rtu", kind="turnstile.modbus", transport="rtu",
                                   serial_port=sim.serial_path, baudrate=115200, poll_interval_s=0.02,
                                   coils={"release_in": COIL_IN, "release_out": COIL_OUT},
                                   inputs={"passage_in": PASS_IN, "passage_out": PASS_OUT})
    ctx = DriverContext("rtu", lambda t, p, pr, s: events.append(t) or SimpleNamespace(id="x"),
                        structlog.get_logger("test"), stopping)
    driver = ModbusTurnstileDriver(config, ctx)
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    try:
        assert sim.wait_reads(3, timeout=10), "no RTU poll reached the module"
        driver.handle("grant", {"direction": "in"})
        sim.wait_coil(COIL_IN, True)
        sim.pulse_input(PASS_IN)
        assert sim.wait_reads(3) and "turnstile.passage" in events
    finally:
        stopping.set()
        driver._wake.set()
        thread.join(10)
        sim.stop()
