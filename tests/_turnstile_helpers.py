"""Driver-against-simulator harness for the turnstile tests: a real pty, a real driver thread."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import structlog

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile.contract import EVENT_PAYLOADS
from drivers.turnstile.driver import TurnstileConfig, TurnstileDriver
from edge.driver import DriverContext

FAST = {"reply_timeout_s": 0.2, "retries": 1, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.4,
        "offline_retry_s": 0.2, "status_interval_s": 0.3, "poll_interval_s": 0.02}


class Lane:
    """A simulated controller on a pty and the driver talking to it; events collected in order."""

    def __init__(self, codec: str, tmp_path, *, addresses=(1,), baudrate=115200, sim_opts=None, **cfg):
        self.path = tmp_path / f"tty-{codec}"
        self.sim = TurnstileSim(codec, self.path, baudrate=baudrate, addresses=addresses,
                                seed=1, **(sim_opts or {})).start()
        options = {**FAST, **cfg}
        if codec == "rs485-bus":
            options["addresses"] = list(addresses)
        self.config = TurnstileConfig(name="lane1", kind="turnstile.serial", codec=codec,
                                      port=str(self.path), baudrate=baudrate, **options)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._new_driver()

    def _new_driver(self) -> None:
        self.stopping = threading.Event()
        ctx = DriverContext("lane1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = TurnstileDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)

    def _emit(self, type, payload, priority, source):
        EVENT_PAYLOADS[type].model_validate(payload)  # the published contract holds for every event
        with self._cond:
            event = {"type": type, "payload": payload, "priority": priority, "seq": len(self.events) + 1}
            self.events.append(event)
            self._cond.notify_all()
            return SimpleNamespace(**event)

    def start(self) -> Lane:
        self._thread.start()
        return self

    def stop_driver(self) -> None:
        self.stopping.set()
        self.driver.line.wake()
        self._thread.join(5)
        self.driver.close()

    def restart_driver(self) -> None:
        """A new driver instance on the same port: what a daemon restart looks like to the lane."""
        self._new_driver()
        self.start()

    def stop(self) -> None:
        self.stop_driver()
        self.sim.stop()

    def of(self, type: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["type"] == type]

    def wait(self, type: str, count: int = 1, timeout: float = 10.0, **match) -> list[dict]:
        """The first ``count`` events of ``type`` whose payload matches ``match``."""
        def found():
            return [e for e in self.events if e["type"] == type
                    and all(e["payload"].get(k) == v for k, v in match.items())]
        with self._cond:
            ok = self._cond.wait_for(lambda: len(found()) >= count, timeout)
            assert ok, f"no {count}x {type} {match} within {timeout}s; got {[e['type'] for e in self.events]}"
            return found()[:count]

    def online(self, address: int = 1, count: int = 1) -> None:
        self.wait("turnstile.online", count=count, address=address)
        # online is announced before the resync; its counters read (no event) ends it
        deadline = time.monotonic() + 10
        with self._cond:
            while self.driver.devices[address].counters is None:
                assert time.monotonic() < deadline, "resync did not finish"
                self._cond.wait(0.01)
