"""Relay-I/O turnstile harness: pymodbus's server as the module, our driver in a real thread."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import structlog

from drivers.io.config import ModbusTurnstileConfig
from drivers.io.driver import ModbusTurnstileDriver
from drivers.sim.modbus_io import ModbusIoSim
from drivers.turnstile.contract import EVENT_PAYLOADS
from edge.driver import DriverContext

COIL_IN, COIL_OUT = 0, 1
PASS_IN, PASS_OUT, FORCED, TAMPER, FIRE = 0, 1, 2, 3, 4


class IoLane:
    def __init__(self, **cfg):
        self.sim = ModbusIoSim().start()
        options = {"poll_interval_s": 0.02, "reply_timeout_s": 0.3, "retries": 1, "pulse_s": 0.2,
                   "reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, **cfg}
        self.config = ModbusTurnstileConfig(
            name="lane1", kind="turnstile.modbus", host="127.0.0.1", tcp_port=self.sim.port,
            coils={"release_in": COIL_IN, "release_out": COIL_OUT},
            inputs={"passage_in": PASS_IN, "passage_out": PASS_OUT, "forced": FORCED, "tamper": TAMPER,
                    "fire_alarm": FIRE}, **options)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self.stopping = threading.Event()
        ctx = DriverContext("lane1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = ModbusTurnstileDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)

    def _emit(self, type, payload, priority, source):
        EVENT_PAYLOADS[type].model_validate(payload)  # the serial turnstile's contract, unchanged
        with self._cond:
            event = {"type": type, "payload": payload, "priority": priority}
            self.events.append(event)
            self._cond.notify_all()
            return SimpleNamespace(id=f"ev-{len(self.events)}", **event)

    def start(self) -> IoLane:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.driver._wake.set()
        self._thread.join(10)
        self.driver.close()
        self.sim.stop()

    def of(self, type: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["type"] == type]

    def wait(self, type: str, count: int = 1, timeout: float = 10.0, **match) -> list[dict]:
        def found():
            return [e for e in self.events if e["type"] == type
                    and all(e["payload"].get(k) == v for k, v in match.items())]
        with self._cond:
            ok = self._cond.wait_for(lambda: len(found()) >= count, timeout)
            assert ok, f"no {count}x {type} {match} within {timeout}s; got {[e['type'] for e in self.events]}"
            return found()[:count]
