"""In-process harness for the x-ray drivers: a real Store, the real XrayService, a driver thread."""

from __future__ import annotations

import json
import threading
import time

import structlog

from edge.config import Settings
from edge.driver import DriverContext
from edge.events import make_event
from edge.store import Store, StoreReader
from services.xray.service import XrayService


def daemon_events(daemon, type_glob: str = "xray.*") -> list[dict]:
    """The events a running ``edge run`` has stored, read from its state_dir (none before it has a store)."""
    if not (daemon.state_dir / "events.db").exists():
        return []
    reader = StoreReader(daemon.state_dir, readonly=True)
    try:
        return [json.loads(body) for _s, body, _a in reader.tail(100_000, type_glob=type_glob)]
    finally:
        reader.close()


class XrayHarness:
    def __init__(self, tmp_path, **xray):
        self.settings = Settings(device_id="dev-1", site="site-1", role="gate", state_dir=tmp_path / "state",
                                 xray=xray or {})
        self.store = Store(self.settings.state_dir, device="dev-1", site="site-1")
        self._cond = threading.Condition()
        self.store.add_listener(self._notify)
        self.service = XrayService(self.settings, self.store, self.emit)
        self.service.start()
        self.drivers: list[tuple] = []

    def _notify(self, _events) -> None:
        with self._cond:
            self._cond.notify_all()

    def emit(self, type, payload, priority, source):
        return self.store.append(make_event(device="dev-1", site="site-1", type=type, source=source,
                                            payload=payload, priority=priority))

    def start_driver(self, cls, name: str = "xr", **options):
        stopping = threading.Event()
        ctx = DriverContext(name, self.emit, structlog.get_logger("test").bind(driver=name), stopping,
                            services={"xray": self.service}.get)
        driver = cls(cls.Config(name=name, kind="test", **options), ctx)
        errors: list[BaseException] = []

        def run():
            try:
                driver.run()
            except BaseException as exc:  # surfaced by the test, not swallowed
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.drivers.append((driver, thread, stopping, errors))
        return driver

    def events(self, type_glob: str = "xray.*") -> list[dict]:
        return [json.loads(body) for _seq, body, _ in self.store.tail(100_000, type_glob=type_glob)]

    def wait(self, predicate, timeout: float = 15.0, what: str = "condition"):
        """Wait for ``predicate()``: woken by every store commit, re-checked at least every 50 ms."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._cond.wait(min(left, 0.05))

    def wait_polls(self, driver, n: int = 3) -> None:
        start = driver.counts["polls"]
        self.wait(lambda: driver.counts["polls"] >= start + n, what=f"{n} more polls")

    def close(self) -> None:
        """Stop the drivers, then the service and the store (a second call does nothing)."""
        drivers, self.drivers = self.drivers, []
        if getattr(self, "_closed", False):
            return
        self._closed = True
        for driver, thread, stopping, errors in drivers:
            stopping.set()
            thread.join(10)
            driver.close()
            assert not thread.is_alive(), "driver did not stop"
            assert not errors, f"driver crashed: {errors!r}"
        self.service.wait_idle()
        self.service.stop()
        self.store.close()
