"""Relay-I/O turnstile harness: pymodbus's server as the module, our driver in a real thread."""

from __future__ import annotations

import threading

import structlog

from drivers.io.config import ModbusTurnstileConfig
from drivers.io.driver import ModbusTurnstileDriver
from drivers.sim.modbus_io import ModbusIoSim
from drivers.turnstile.contract import EVENT_PAYLOADS
from edge.driver import DriverContext
from tests._driver_events import EventRecorder

COIL_IN, COIL_OUT = 0, 1
PASS_IN, PASS_OUT, FORCED, TAMPER, FIRE = 0, 1, 2, 3, 4


class IoLane(EventRecorder):
    def __init__(self, **cfg):
        self.sim = ModbusIoSim().start()
        options = {"poll_interval_s": 0.02, "reply_timeout_s": 0.3, "retries": 1, "pulse_s": 0.2,
                   "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, **cfg}
        self.config = ModbusTurnstileConfig(
            name="lane1", kind="turnstile.modbus", host="127.0.0.1", tcp_port=self.sim.port,
            coils={"release_in": COIL_IN, "release_out": COIL_OUT},
            inputs={"passage_in": PASS_IN, "passage_out": PASS_OUT, "forced": FORCED, "tamper": TAMPER,
                    "fire_alarm": FIRE}, **options)
        EventRecorder.__init__(self, EVENT_PAYLOADS)
        self.stopping = threading.Event()
        ctx = DriverContext("lane1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = ModbusTurnstileDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)


    def start(self) -> IoLane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.driver._wake.set()
        self._thread.join(10)
        self.driver.close()
        self.sim.stop()

