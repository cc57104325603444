"""The supervisor owns every driver thread and every component thread: starts, restarts, stops.

This is the one place with a catch-all handler: a driver that raises is
recorded as a ``system.driver_fault`` event, marked degraded and restarted
after an exponentially growing delay; the other drivers never notice. A
component's long-lived thread (dose ledger, command router, learning,
messaging, uplink) runs as a ``SupervisedThread``: an unexpected exception is a
``system.component_fault`` alarm, the thread is ``down`` until it is restarted
after a bounded back-off, and no thread ever dies quietly.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from edge.config import DriverEntry, SupervisorSettings, driver_config
from edge.driver import Driver, DriverContext
from edge.errors import CommandError, EdgeError, StoreError, StoreFull
from edge.events import printable
from edge.registry import driver_class

log = structlog.get_logger("edge.supervisor")
_STABLE_AFTER_S = 30.0  # a run this long resets the backoff and clears "degraded"
# A driver that let StoreFull (a full store or disk) escape is restarted within this long,
# whatever its back-off: its device keeps working and the store may have room again.
_STORE_FULL_BACKOFF_S = 1.0


class DriverRunner:
    """One driver: its run thread, its command thread, its health."""

    def __init__(self, entry: DriverEntry, emit: Callable, settings: SupervisorSettings,
                 on_health_change: Callable[[], None], services: Callable[[str], Any] = lambda _name: None,
                 state_dir: Path | None = None, now: Callable[[], float] = time.time):
        self.name, self.kind = entry.name, entry.kind
        self._services, self._state_dir = services, state_dir
        self._now = now  # the daemon's trusted time (DriverContext.now)
        self._cls = driver_class(entry.kind)
        self._config = driver_config(entry)
        self._emit, self._settings = emit, settings
        self._on_health_change = on_health_change
        self.stopping = threading.Event()
        self._driver: Driver | None = None
        self._status, self._restarts, self._last_error = "starting", 0, None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"driver:{self.name}", daemon=True)
        self._commands = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"cmd:{self.name}")

    @property
    def command_effects(self):
        return self._cls.command_effects

    def check_command(self, name: str, args: dict[str, Any]) -> None:
        """The driver's own check of a command before it is held or run (Driver.check_command)."""
        self._cls.check_command(self._config, name, args)

    def start(self) -> None:
        self._thread.start()

    def _set_status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._on_health_change()

    def _loop(self) -> None:
        delay = self._settings.backoff_initial_s
        bound = log.bind(driver=self.name, kind=self.kind)
        while not self.stopping.is_set():
            ctx = DriverContext(self.name, self._emit, bound, self.stopping, self._on_health_change,
                                self._services, state_dir=self._state_dir, now=self._now)
            started = self._started = time.monotonic()
            full = False
            try:
                self._driver = self._cls(self._config, ctx)
                self._set_status("ok" if self._restarts == 0 else self._status)
                self._driver.run()
                if self.stopping.is_set():
                    break
                raise RuntimeError("run() returned while the driver was not being stopped")
            except Exception as exc:  # the one catch-all: record, back off, restart
                if self.stopping.is_set():
                    break
                self._fault(exc, bound)
                full = isinstance(exc, StoreFull)  # the disk, not the driver: retry soon
            finally:
                self._close_driver(bound)
            if time.monotonic() - started > _STABLE_AFTER_S:
                delay = self._settings.backoff_initial_s
            # Full jitter keeps many failing drivers from restarting in lockstep.
            wait = random.uniform(delay / 2, delay)
            if full:
                wait = min(wait, random.uniform(_STORE_FULL_BACKOFF_S / 2, _STORE_FULL_BACKOFF_S))
            bound.info("driver_restart_scheduled", in_s=round(wait, 3), restarts=self._restarts)
            if self.stopping.wait(wait):
                break
            delay = min(delay * 2, self._settings.backoff_max_s)
        self._set_status("stopped")

    def _fault(self, exc: BaseException, bound) -> None:
        self._restarts += 1
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        bound.error("driver_fault", error_type=type(exc).__name__, error=str(exc)[:300],
                    restarts=self._restarts)
        self._set_status("degraded")
        try:
            self._emit("system.driver_fault", {
                "driver": self.name, "kind": self.kind, "error_type": type(exc).__name__,
                "error": str(exc)[:300], "restarts": self._restarts,
            }, "normal", "supervisor")
        except StoreError as store_exc:
            bound.error("driver_fault_not_recorded", error=str(store_exc))

    def _close_driver(self, bound) -> None:
        driver, self._driver = self._driver, None
        if driver is None:
            return
        try:
            driver.close()
        except Exception as exc:  # part of the one catch-all: a bad close() must not end the restarts
            bound.error("driver_close_failed", error_type=type(exc).__name__, error=str(exc)[:300])

    def submit(self, name: str, args: dict[str, Any], *, not_after: float | None = None) -> Future:
        """Run a command on this driver's own command thread.

        ``not_after`` (epoch seconds): refuse it if it only gets its turn after then,
        e.g. a signed "unlock" that expired while queued behind a slow command.
        """
        return self._commands.submit(self._handle, name, args, not_after)

    def _handle(self, name: str, args: dict[str, Any], not_after: float | None = None) -> dict[str, Any]:
        if not_after is not None and self._now() > not_after:  # a clock set back revives no command
            raise CommandError(f"{name!r} expired while waiting for {self.name!r} to finish earlier commands")
        driver = self._driver
        if driver is None:
            raise CommandError(f"driver {self.name!r} is not running (status {self._status}); try again shortly")
        return driver.handle(name, args)

    def health(self) -> dict[str, Any]:
        if (self._status == "degraded" and self._driver is not None
                and time.monotonic() - self._started >= _STABLE_AFTER_S):
            self._set_status("ok")  # stable again; restarts and last_error still tell the story
        report: dict[str, Any] = {"kind": self.kind, "status": self._status, "restarts": self._restarts}
        if self._last_error:
            report["last_error"] = self._last_error
        driver = self._driver
        if driver is not None and self._status == "ok":
            try:
                detail = driver.health()
                report.update({k: v for k, v in detail.items() if k != "status"})
                report["status"] = detail.get("status", "ok")
            except Exception as exc:  # a driver's bug must not take the status loop (and daemon) down
                report["status"] = "degraded"
                report["health_error"] = f"{type(exc).__name__}: {exc}"[:300]
        return report

    def stop(self) -> None:
        self.stopping.set()
        self._commands.shutdown(wait=False, cancel_futures=True)

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


class Supervisor:
    """Starts every configured driver and stops them all within a deadline."""

    def __init__(self, entries: list[DriverEntry], emit: Callable, settings: SupervisorSettings,
                 on_health_change: Callable[[], None] = lambda: None,
                 services: Callable[[str], Any] = lambda _name: None, *, state_dir: Path | None = None,
                 now: Callable[[], float] = time.time):
        self._settings = settings
        self.runners = {e.name: DriverRunner(e, emit, settings, on_health_change, services, state_dir, now)
                        for e in entries}

    def start(self) -> None:
        for runner in self.runners.values():
            runner.start()

    def health(self) -> dict[str, dict]:
        return {name: r.health() for name, r in self.runners.items()}

    def replace(self, entry: DriverEntry) -> None:
        """Restart one driver with new options (remote config); the others never notice."""
        old = self.runners[entry.name]
        old.stop()
        old.join(self._settings.stop_timeout_s)
        new = DriverRunner(entry, old._emit, self._settings, old._on_health_change, old._services,
                           old._state_dir, old._now)
        self.runners[entry.name] = new
        new.start()

    def runner(self, name: str) -> DriverRunner:
        try:
            return self.runners[name]
        except KeyError:
            raise CommandError(f"no driver named {name!r}; configured: {', '.join(self.runners) or 'none'}") from None

    def stop(self) -> list[str]:
        """Signal every driver, wait up to stop_timeout_s in total; returns the stuck ones."""
        for runner in self.runners.values():
            runner.stop()
        deadline = time.monotonic() + self._settings.stop_timeout_s
        stuck = []
        for name, runner in self.runners.items():
            if not runner.join(max(0.0, deadline - time.monotonic())):
                stuck.append(name)
                log.error("driver_stuck_on_stop", driver=name, timeout_s=self._settings.stop_timeout_s)
        return stuck


class SupervisedThread:
    """A component's long-lived thread, restarted after an unexpected exception.

    Drop-in for the ``threading.Thread`` a component used to own: ``start``,
    ``join``, ``is_alive``. ``is_alive()`` is False while the thread is down
    (between a fault and its restart), so a component's status says ``down``
    and a safety component (the dose ledger) refuses to decide meanwhile.
    ``target`` returning normally ends the thread (an orderly stop).
    """

    def __init__(self, target: Callable[[], None], *, name: str, emit: Callable | None,
                 backoff_initial_s: float = 0.2, backoff_max_s: float = 5.0,
                 on_change: Callable[[], None] | None = None):
        self.name, self._target, self._emit = name, target, emit
        self._initial, self._max = backoff_initial_s, backoff_max_s
        self._on_change = on_change or (lambda: None)
        self._stopping = threading.Event()
        self._running = threading.Event()
        self.faults, self.last_error = 0, None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._running.set()
        self._thread.start()

    def is_alive(self) -> bool:
        """True while ``target`` is running (False while down, awaiting a restart)."""
        return self._running.is_set() and self._thread.is_alive()

    def stop(self) -> None:
        """Stop restarting (the component still tells ``target`` to return)."""
        self._stopping.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.ident is not None:  # never started (a start that failed half way): nothing to wait for
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "ok" if self.is_alive() else "down", "faults": self.faults}
        if self.last_error:
            report["last_error"] = self.last_error
        return report

    def _loop(self) -> None:
        delay, bound = None, log.bind(component=self.name)
        while True:
            started = time.monotonic()
            self._running.set()
            if delay is not None:
                bound.info("component_restarted", faults=self.faults)
                self._on_change()  # status says ok again
            try:
                self._target()
                return  # asked to stop
            except Exception as exc:  # the one catch-all for components: record, back off, restart
                self._running.clear()
                if self._stopping.is_set():
                    return
                self._fault(exc, bound)
            stable = time.monotonic() - started > _STABLE_AFTER_S
            delay = self._initial if delay is None or stable else min(delay * 2, self._max)
            bound.info("component_restart_scheduled", in_s=round(delay, 3), faults=self.faults)
            if self._stopping.wait(delay):
                return

    def _fault(self, exc: BaseException, bound) -> None:
        self.faults += 1
        error = printable(str(exc))  # an error may quote hostile input: stored, it must be storable
        self.last_error = f"{type(exc).__name__}: {error}"[:300]
        bound.error("component_fault", error_type=type(exc).__name__, error=error,
                    faults=self.faults, exc_info=exc)
        self._on_change()
        if self._emit is None:
            return
        try:
            self._emit("system.component_fault", {
                "component": self.name, "error_type": type(exc).__name__, "error": error,
                "faults": self.faults, "detail": "the component stopped on an unexpected error; it is "
                "down until it restarts; check `edge status`"}, "alarm", "supervisor")
        except EdgeError as store_exc:
            bound.error("component_fault_not_recorded", error=str(store_exc))
