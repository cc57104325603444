"""``edge run``: wire the store, the supervisor and the components, then wait.

The daemon's main thread is the supervisor loop: it pings the systemd
watchdog, keeps the status file current, and on SIGTERM stops everything in
order (drivers first, so their last events are stored; then components; then
the store, which finishes every pending commit) within 10 seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from edge import systemd
from edge._wakeup import Wakeup
from edge.clock import ClockMonitor
from edge.config import Settings
from edge.errors import EdgeError
from edge.events import make_event
from edge.store import Store
from edge.supervisor import Supervisor
from edge.uptime import Clocks, Uptime

log = structlog.get_logger("edge.daemon")
STATUS_FILE = "status.json"
_STATUS_REFRESH_S = 10.0
# CPython makes a thread that wants the GIL back (the store writer after each fsync, a
# driver after a serial read) wait up to this long while another thread runs Python.
# The default 5 ms caps durable commits at ~70/s beside one busy thread; 0.5 ms gives
# ~770/s here, for a few percent more switching among CPU-bound threads (rare here).
GIL_SWITCH_INTERVAL_S = 0.0005


class Component(Protocol):
    """A long-lived part of the daemon beside the drivers (the uplink, a cache…)."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.started_at = datetime.now(UTC)
        self._stop = threading.Event()
        self._health_changed = threading.Event()
        self._wakeup = Wakeup()  # the main loop's sleep: any thread, and signals, end it
        self.clock = ClockMonitor()
        # The daemon's two clocks (trusted time, persisted uptime; edge.uptime), set by run()
        # before any component is built: services judge lockouts and dose windows by both.
        self.clocks: Clocks | None = None
        self.store: Store | None = None
        self.supervisor: Supervisor | None = None
        self.components: list[Component] = []
        self.link = None  # the MQTT link, when [mqtt].brokers is set (issue 3)
        self.trust = None  # edge.trust.TrustStore: checked before anything starts
        self.exit_code = 0
        self.config_path: Path | None = None  # set by `edge run`: remote config is written beside it
        # Why status.json could not be written (a full disk), since when; None when it was.
        self.status_file_error: dict[str, str] | None = None

    def emit(self, type: str, payload: dict, priority: str, source: str):
        """What drivers' ``ctx.emit`` calls: build, validate, store durably."""
        s = self.settings
        return self.store.append(make_event(
            device=s.device_id, site=s.site, type=type, source=source, payload=payload,
            priority=priority, clock=self.clock.state()))

    def request_stop(self, *_args) -> None:
        self._stop.set()
        self._status_changed()  # wakes the main loop at once

    def _status_changed(self) -> None:
        self._health_changed.set()
        self._wakeup.poke()

    def request_restart(self, reason: str) -> None:
        """Stop cleanly and exit 75 so that the service manager starts the (new) slot."""
        from edge.update.boot import EX_RESTART

        log.info("edge_restart_requested", reason=reason)
        self.exit_code = EX_RESTART
        self.request_stop()

    def notify_health_changed(self) -> None:
        self._status_changed()
        if self.link is not None:
            self.link.notify_health_changed()  # re-publishes the retained state (rate-limited)

    def trusted_now(self) -> float:
        """UNIX time to judge expiry by: the later of the wall clock and the device's time floor
        (kept by the command router, edge.commands.seen), so a clock set back (dead RTC battery,
        rogue NTP) revives nothing. Drivers get it as ``ctx.now``, the trust store judges key
        expiry by it. The wall clock alone until the router has read the floor (the first
        moments of a start, before any driver runs)."""
        router = self.component("commands")
        if router is not None:
            try:
                return router.trusted_now()
            except EdgeError:  # not started yet
                pass
        return time.time()

    def component(self, name: str) -> Component | None:
        """A component already built, by name (``commands``, ``xray``...): how a service or a
        driver reaches another without importing it."""
        return next((c for c in self.components if c.name == name), None)

    def _build_components(self) -> None:
        """Components that exist for this config, in start order (stopped in reverse).

        The core's own come first (the MQTT link, revocations, the command router); then what
        services and driver families register under ``edge.components`` (a tablet's learning
        and messaging, the x-ray ledger, the gate engine, a camera's gallery sync), each of which
        gets the daemon and uses only ``settings``, ``store``, ``supervisor``, ``emit``, ``link``
        and ``component(name)``; the update agents last.
        """
        components = self.components
        if self.settings.mqtt.brokers:
            from edge.mqtt import MqttLink  # first: everything after it may use daemon.link

            self.link = MqttLink(self.settings, self.store, health=self.supervisor.health,
                                 on_change=self._status_changed)  # refreshes status.json
            components.append(self.link)
        from edge.trust.revocation import (
            RevocationListener,  # before commands: revocations apply first
        )

        components.append(RevocationListener(self, self.trust))
        from edge.commands.router import CommandRouter  # after the link: it subscribes on it

        components.append(CommandRouter(self))
        if self.settings.role == "gate":
            from edge.signing import preload

            preload()  # tablets load it on first use (footprint); a gate's first grant should not wait
        for factory in _registered_factories():
            components += factory(self)
        if self.settings.update.metadata_url:
            # Last: it judges the health of all the others.
            from edge.update.agent import UpdateAgent

            components.append(UpdateAgent(self))
        if self.settings.remote_config.enabled and self.link is not None and self.config_path is not None:
            from edge.update.config_agent import RemoteConfigAgent

            components.append(RemoteConfigAgent(self, self.config_path))

    def run(self) -> int:
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        from edge.trust import trust_store

        self.trust = trust_store(s, clock=self.trusted_now)  # TrustAnchorError (a ConfigError) names the refused file: exit 78
        from edge.commands.seen import read_uptime

        self.clocks = Clocks(now=self.trusted_now, uptime=Uptime(read_uptime(s.state_dir)))
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self._wakeup.install()
        self.store = Store(s.state_dir, device=s.device_id, site=s.site, settings=s.store, clock=self.clock)
        self.supervisor = Supervisor(s.drivers, self.emit, s.supervisor, self.notify_health_changed,
                                     services=self.component, state_dir=s.state_dir, now=self.trusted_now)
        self._build_components()
        for component in self.components:
            component.start()
        self.supervisor.start()
        self.write_status()
        systemd.notify("READY=1")
        log.info("edge_started", device=s.device_id, site=s.site, role=s.role,
                 drivers=len(s.drivers), pid=os.getpid())
        self._loop()
        return self._shutdown()

    def _loop(self) -> None:
        watchdog = systemd.watchdog_interval_s()
        tick = min(watchdog or _STATUS_REFRESH_S, _STATUS_REFRESH_S)
        last_write = time.monotonic()
        while not self._stop.is_set():
            # Wake on a health change, a stop, or the tick: no busy polling.
            self._wakeup.wait(tick)
            if watchdog:
                systemd.notify("WATCHDOG=1")
            if self._health_changed.is_set() or time.monotonic() - last_write >= _STATUS_REFRESH_S:
                self._health_changed.clear()
                self.write_status()
                last_write = time.monotonic()
            if self._stop.is_set():
                break

    def _shutdown(self) -> int:
        systemd.notify("STOPPING=1")
        started = time.monotonic()
        log.info("edge_stopping")
        stuck = self.supervisor.stop()
        for component in reversed(self.components):
            component.stop()
        self.write_status(running=False)
        self.store.close()
        self._wakeup.close()
        log.info("edge_stopped", took_s=round(time.monotonic() - started, 3), stuck_drivers=stuck)
        return self.exit_code

    def status(self, running: bool = True) -> dict[str, Any]:
        s = self.settings
        return {
            "running": running, "pid": os.getpid(), "device_id": s.device_id, "site": s.site,
            "role": s.role, "started_at": self.started_at.isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "drivers": self.supervisor.health() if self.supervisor else {},
            "components": {c.name: _component_status(c) for c in self.components},
            "status_file": ({"written": True} if self.status_file_error is None
                            else {"written": False, **self.status_file_error}),
        }

    def write_status(self, running: bool = True) -> None:
        """Atomically replace state_dir/status.json for the CLI to read.

        Never raises: a full disk must not end the daemon's loop, and with it the
        watchdog pings and the gate.
        """
        path: Path = self.settings.state_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.status(running), indent=1, default=str))
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # a half-written temporary file only takes more space
            if self.status_file_error is None:  # once per episode: the loop retries every 10 s
                log.error("status_write_failed", path=str(path), error=str(exc))
                self.status_file_error = {"error": exc.strerror or str(exc),
                                          "since": datetime.now(UTC).isoformat(timespec="seconds")}
            return
        if self.status_file_error is not None:
            log.info("status_write_recovered", path=str(path), failing_since=self.status_file_error["since"])
            self.status_file_error = None


def _registered_factories() -> list:
    """The component factories services and driver families register under ``edge.components``
    (each returns nothing when it has nothing to do in this config), by their ``order``."""
    from edge.registry import registered

    factories = [ep.load() for ep in registered("edge.components")]
    return sorted(factories, key=lambda f: getattr(f, "order", 50))  # stable: then by name


def _component_status(component) -> dict[str, Any]:
    """A component's status, or what went wrong asking for it: one bug must not hide the rest."""
    try:
        return component.status()
    except Exception as exc:
        log.error("component_status_failed", component=component.name, error_type=type(exc).__name__,
                  error=str(exc)[:300])
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
