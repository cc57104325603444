"""``sallyport.modbus`` against pymodbus's server playing the door module."""

from __future__ import annotations

import threading

import pytest
import structlog

from drivers.io.config import SallyPortConfig
from drivers.io.contract import EVENT_PAYLOADS as SALLY
from drivers.io.sallyport import SallyPortDriver
from drivers.sim.modbus_io import ModbusIoSim
from drivers.turnstile.contract import EVENT_PAYLOADS as TURNSTILE
from edge.driver import DriverContext
from edge.errors import CommandError
from tests._driver_events import EventRecorder

OUTER_COIL, INNER_COIL, OUTER_CLOSED, INNER_CLOSED = 0, 1, 0, 1


class Port(EventRecorder):
    def __init__(self, sim: ModbusIoSim | None = None):
        self.sim = sim or ModbusIoSim().start()
        self.sim.set_input(OUTER_CLOSED, True)
        self.sim.set_input(INNER_CLOSED, True)
        self.config = SallyPortConfig(name="sp1", kind="sallyport.modbus", host="127.0.0.1",
                                      tcp_port=self.sim.port, outer={"release": OUTER_COIL, "closed": OUTER_CLOSED},
                                      inner={"release": INNER_COIL, "closed": INNER_CLOSED}, release_s=0.6,
                                      poll_interval_s=0.02, reconnect_initial_s=0.05, reconnect_max_s=0.3)
        EventRecorder.__init__(self, {**SALLY, **TURNSTILE})
        self.start_driver()

    def start_driver(self) -> None:
        self.stopping = threading.Event()
        ctx = DriverContext("sp1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = SallyPortDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)
        self._thread.start()

    def stop_driver(self) -> None:
        self.stopping.set()
        self.driver._wake.set()
        self._thread.join(10)



    def door(self, door: str, open_: bool) -> None:
        self.sim.set_input(OUTER_CLOSED if door == "outer" else INNER_CLOSED, not open_)
        assert self.sim.wait_reads(3)


@pytest.fixture
def port():
    p = Port()
    p.wait("turnstile.online")
    assert p.sim.wait_reads(3)
    yield p
    p.stop_driver()
    p.sim.stop()


def test_a_grant_runs_the_cycle_one_door_at_a_time(port):
    port.driver.handle("grant", {"direction": "in"})
    port.sim.wait_coil(OUTER_COIL, True)
    assert not port.sim.coils[INNER_COIL]
    port.door("outer", True)
    port.door("outer", False)  # the person is in the airlock, the outer door closed behind them
    port.sim.wait_coil(INNER_COIL, True)
    port.door("inner", True)
    assert not port.sim.coils[OUTER_COIL]
    port.door("inner", False)
    passage = port.wait("turnstile.passage")[0]["payload"]
    assert passage["direction"] == "in" and passage["counter"] == 1
    assert not [e for e in port.events if e["type"] == "sallyport.forced"]


def test_the_interlock_refuses_the_second_door_while_the_first_is_open(port):
    port.driver.handle("release_door", {"door": "outer"})
    port.door("outer", True)
    with pytest.raises(CommandError, match="interlock"):
        port.driver.handle("release_door", {"door": "inner"})
    with pytest.raises(CommandError, match="no unlock"):
        port.driver.handle("unlock", {})
    port.door("outer", False)
    for _ in range(100):  # the outer door's release runs out (0.6 s), then it is read closed
        if not port.sim.coils[OUTER_COIL]:
            break
        assert port.sim.wait_reads(1)
    assert not port.sim.coils[OUTER_COIL] and port.sim.wait_reads(3)
    port.driver.handle("release_door", {"door": "inner"})  # closed, read closed after its release: allowed
    port.sim.wait_coil(INNER_COIL, True)


def test_forced_door_is_an_alarm(port):
    port.door("inner", True)
    forced = port.wait("sallyport.forced")[0]
    assert forced["priority"] == "alarm" and forced["payload"]["door"] == "inner"
    with pytest.raises(CommandError, match="interlock"):
        port.driver.handle("grant", {"direction": "in"})  # the inner door is open: the outer stays shut


def test_after_a_restart_with_a_door_open_nothing_is_released(port):
    port.door("outer", True)  # someone holds the outer door open
    port.stop_driver()
    port.start_driver()  # the edge restarts (network down or not: all of this is local)
    port.wait("turnstile.online", count=2)
    assert port.sim.wait_reads(3)
    with pytest.raises(CommandError, match="interlock"):
        port.driver.handle("release_door", {"door": "inner"})
    assert not port.sim.coils[INNER_COIL]


def test_silent_module_takes_the_port_out_of_service(port):
    port.sim.silent = True
    port.wait("turnstile.fault", code=1)
    with pytest.raises(CommandError, match="out of service"):
        port.driver.handle("grant", {"direction": "in"})
    port.sim.silent = False
    port.wait("turnstile.fault", code=0)
