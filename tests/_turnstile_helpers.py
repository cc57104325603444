"""Driver-against-simulator harness for the turnstile tests: a real pty, a real driver thread."""

from __future__ import annotations

import threading
import time

import structlog

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile.contract import EVENT_PAYLOADS
from drivers.turnstile.driver import TurnstileConfig, TurnstileDriver
from edge.driver import DriverContext
from tests._driver_events import EventRecorder

FAST = {"reply_timeout_s": 0.2, "retries": 1, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.4,
        "offline_retry_s": 0.2, "status_interval_s": 0.3, "poll_interval_s": 0.02}


class Lane(EventRecorder):
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
        EventRecorder.__init__(self, EVENT_PAYLOADS)
        self._new_driver()

    def _new_driver(self) -> None:
        self.stopping = threading.Event()
        ctx = DriverContext("lane1", self._emit, structlog.get_logger("test"), self.stopping)
        self.driver = TurnstileDriver(self.config, ctx)
        self._thread = threading.Thread(target=self.driver.run, daemon=True)


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


    def online(self, address: int = 1, count: int = 1) -> None:
        self.wait("turnstile.online", count=count, address=address)
        # online is announced before the resync; its counters read (no event) ends it
        deadline = time.monotonic() + 10
        with self._cond:
            while self.driver.devices[address].counters is None:
                assert time.monotonic() < deadline, "resync did not finish"
                self._cond.wait(0.01)
