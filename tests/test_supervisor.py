"""The supervisor: crashing drivers are recorded and restarted with backoff while the others
keep running; a stuck driver cannot hold up shutdown past the timeout."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from importlib.metadata import EntryPoint

import pytest

from edge import registry
from edge.config import DriverEntry, SupervisorSettings
from edge.driver import Driver
from edge.errors import CommandError, StoreNoSpace
from edge.events import make_event
from edge.store import Store
from edge.supervisor import Supervisor
from edge.testing.wait import wait_for

RELEASE = threading.Event()  # lets the stuck driver's thread end after its test


class StuckDriver(Driver):
    """Ignores ctx.stopping, as a driver blocked in a device read would."""

    def run(self) -> None:
        RELEASE.wait(60)


class BadCloseDriver(Driver):
    """Crashes, and its close() raises too: it must still be restarted."""

    starts = 0

    def run(self) -> None:
        type(self).starts += 1
        if type(self).starts < 3:
            raise OSError("device unplugged")
        self.ctx.stopping.wait()

    def close(self) -> None:
        raise RuntimeError("close failed as well")


class FlappingDriver(Driver):
    """Its device goes offline once; it says so through ctx.health_changed()."""

    def run(self) -> None:
        self.online = True
        self.ctx.stopping.wait(0.2)
        self.online = False
        self.ctx.health_changed()
        self.ctx.stopping.wait()

    def health(self):
        return {"status": "ok" if getattr(self, "online", True) else "degraded"}


class FullDiskDriver(Driver):
    """Lets StoreFull escape on every run, as a driver written without catching it would."""

    starts = 0

    def run(self):
        FullDiskDriver.starts += 1
        raise StoreNoSpace("the disk is full; the event was not stored")


class StateDirDriver(Driver):
    """Keeps a file in the state_dir its daemon gave it."""

    def run(self):
        (self.ctx.state_dir / f"{self.ctx.name}.seen").write_text(str(self.ctx.state_dir))
        self.ctx.stopping.wait()


class BadHealthDriver(Driver):
    """Runs fine, but its health() has a bug."""

    def health(self):
        raise KeyError("sensor")


@pytest.fixture
def test_kinds(monkeypatch):
    """Register this module's drivers like a third party would: as entry points."""
    real = dict(registry._entry_points())
    extra = {kind: EntryPoint(kind, f"{__name__}:{cls}", registry.GROUP)
             for kind, cls in (("test.stuck", "StuckDriver"), ("test.badclose", "BadCloseDriver"),
                               ("test.badhealth", "BadHealthDriver"), ("test.flapping", "FlappingDriver"),
                               ("test.fulldisk", "FullDiskDriver"), ("test.statedir", "StateDirDriver"))}
    monkeypatch.setattr(registry, "_entry_points", lambda: {**real, **extra})


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "state", device="dev-1", site="site-1")
    yield store
    store.close()


def emitter(store: Store):
    def emit(type: str, payload: dict, priority: str, source: str):
        return store.append(make_event(device="dev-1", site="site-1", type=type, source=source,
                                       payload=payload, priority=priority))
    return emit


def stored(store: Store, type_glob: str = "*") -> list[dict]:
    return [json.loads(body) for _s, body, _a in store.tail(100_000, type_glob=type_glob)]


def ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def test_crashing_driver_is_restarted_with_growing_backoff_while_another_keeps_running(store):
    settings = SupervisorSettings(backoff_initial_s=0.2, backoff_max_s=0.8, stop_timeout_s=5)
    entries = [
        DriverEntry(name="flaky", kind="sim.heartbeat", rate=10, fail_every=10, event_type="sim.flaky"),
        DriverEntry(name="steady", kind="sim.heartbeat", rate=20, event_type="sim.steady"),
    ]
    health_changes = threading.Event()
    sup = Supervisor(entries, emitter(store), settings, health_changes.set)
    sup.start()
    try:
        def restarted_four_times() -> bool:
            faults = stored(store, "system.driver_fault")
            return len(faults) >= 4 and any(e["seq"] > faults[3]["seq"] for e in stored(store, "sim.flaky"))

        wait_for(restarted_four_times, timeout=40)
        health = sup.health()
    finally:
        assert sup.stop() == []

    faults = stored(store, "system.driver_fault")
    assert [f["payload"]["restarts"] for f in faults[:4]] == [1, 2, 3, 4]
    first = faults[0]
    assert first["source"] == "supervisor" and first["priority"] == "normal"
    assert first["payload"] == {"driver": "flaky", "kind": "sim.heartbeat", "error_type": "RuntimeError",
                                "error": "simulated failure after 10 events", "restarts": 1}

    # Restart delay = from the fault to the restarted driver's first event (n == 0).
    flaky = stored(store, "sim.flaky")
    delays = []
    for fault in faults[:4]:
        restart = next(e for e in flaky if e["seq"] > fault["seq"] and e["payload"]["n"] == 0)
        delays.append(ts(restart) - ts(fault))
    # Full jitter: a wait is uniform in [d/2, d] with d = 0.2, 0.4, 0.8 and then capped at 0.8.
    # The lower bounds prove the growth (load only ever makes a delay longer); the upper
    # bounds, with slack for a loaded 2-core machine, prove the cap.
    slack = 1.0
    for delay, d in zip(delays, [0.2, 0.4, 0.8, 0.8], strict=True):
        assert d / 2 - 0.02 <= delay <= d + slack, (delays, d)

    # The healthy driver never noticed: one instance, an unbroken counter, no long gaps.
    steady = stored(store, "sim.steady")
    assert [e["payload"]["n"] for e in steady] == list(range(len(steady)))
    span = ts(steady[-1]) - ts(steady[0])
    assert len(steady) >= 0.5 * 20 * span
    gaps = [ts(b) - ts(a) for a, b in zip(steady, steady[1:], strict=False)]
    assert max(gaps) < 2.0, max(gaps)  # never held up by the other driver's restarts

    assert health["flaky"]["status"] == "degraded" and health["flaky"]["restarts"] >= 4
    assert health["flaky"]["last_error"] == "RuntimeError: simulated failure after 10 events"
    assert health["steady"]["status"] == "ok" and health["steady"]["restarts"] == 0
    assert health["steady"]["sent"] > 0
    assert health_changes.is_set()


def test_stuck_driver_does_not_block_stop_past_the_timeout(store, test_kinds):
    RELEASE.clear()
    settings = SupervisorSettings(stop_timeout_s=0.5)
    entries = [DriverEntry(name="stuck", kind="test.stuck"),
               DriverEntry(name="hb", kind="sim.heartbeat", rate=50)]
    sup = Supervisor(entries, emitter(store), settings)
    sup.start()
    try:
        wait_for(lambda: sup.health()["hb"].get("sent", 0) > 0)
        started = time.monotonic()
        stuck = sup.stop()
        took = time.monotonic() - started
    finally:
        RELEASE.set()
    assert stuck == ["stuck"]
    assert 0.4 <= took < 2.0, took
    assert sup.health()["hb"]["status"] == "stopped"


def test_driver_whose_close_raises_is_still_restarted(store, test_kinds):
    BadCloseDriver.starts = 0
    settings = SupervisorSettings(backoff_initial_s=0.05, backoff_max_s=0.1)
    sup = Supervisor([DriverEntry(name="bad", kind="test.badclose")], emitter(store), settings)
    sup.start()
    try:
        wait_for(lambda: BadCloseDriver.starts >= 3)
    finally:
        assert sup.stop() == []
    assert len(stored(store, "system.driver_fault")) == 2


def test_commands_run_on_the_drivers_command_thread(store):
    sup = Supervisor([DriverEntry(name="hb", kind="sim.heartbeat", rate=50)], emitter(store),
                     SupervisorSettings())
    sup.start()
    try:
        wait_for(lambda: sup.health()["hb"]["status"] == "ok")
        assert sup.runner("hb").submit("ping", {}).result(10)["pong"] is True
        with pytest.raises(CommandError, match="supported: ping"):
            sup.runner("hb").submit("open", {}).result(10)
        with pytest.raises(CommandError, match="configured: hb"):
            sup.runner("nope")
    finally:
        sup.stop()


def test_degraded_clears_after_a_stable_run(store, test_kinds, monkeypatch):
    from edge import supervisor

    monkeypatch.setattr(supervisor, "_STABLE_AFTER_S", 0.3)
    BadCloseDriver.starts = 0
    settings = SupervisorSettings(backoff_initial_s=0.05, backoff_max_s=0.1)
    sup = Supervisor([DriverEntry(name="bad", kind="test.badclose")], emitter(store), settings)
    sup.start()
    try:
        wait_for(lambda: BadCloseDriver.starts >= 3)
        wait_for(lambda: sup.health()["bad"]["status"] == "ok", timeout=10)
        health = sup.health()["bad"]
    finally:
        sup.stop()
    assert health["restarts"] == 2 and health["last_error"] == "OSError: device unplugged"


def test_a_driver_whose_health_raises_shows_degraded_instead_of_breaking_status(store, test_kinds):
    sup = Supervisor([DriverEntry(name="odd", kind="test.badhealth"),
                      DriverEntry(name="hb", kind="sim.heartbeat", rate=10)], emitter(store), SupervisorSettings())
    sup.start()
    try:
        wait_for(lambda: sup.runner("odd")._driver is not None and sup.health()["hb"]["status"] == "ok")
        health = sup.health()
    finally:
        sup.stop()
    assert health["odd"]["status"] == "degraded" and health["odd"]["health_error"] == "KeyError: 'sensor'"
    assert health["hb"]["status"] == "ok"


def test_a_driver_reports_a_health_change_at_once(store, test_kinds):
    changed = threading.Event()
    sup = Supervisor([DriverEntry(name="lane", kind="test.flapping")], emitter(store), SupervisorSettings(),
                     on_health_change=changed.set)
    sup.start()
    try:
        assert changed.wait(10)  # the runner's own ok-status change
        changed.clear()
        assert changed.wait(10), "ctx.health_changed() did not reach the daemon"
        health = sup.health()["lane"]
    finally:
        sup.stop()
    assert health["status"] == "degraded"


def test_a_driver_stopped_by_a_full_disk_restarts_within_a_second_whatever_its_backoff(store, test_kinds):
    """Issue 18: each failed append crashed the driver and the back-off grew to 54 s."""
    FullDiskDriver.starts = 0
    settings = SupervisorSettings(backoff_initial_s=30.0, backoff_max_s=60.0)
    sup = Supervisor([DriverEntry(name="full", kind="test.fulldisk")], emitter(store), settings)
    began = time.monotonic()
    sup.start()
    try:
        wait_for(lambda: FullDiskDriver.starts >= 5, timeout=10)
    finally:
        assert sup.stop() == []
    assert time.monotonic() - began < 6.0  # four restarts, each within a second


def test_two_supervisors_in_one_process_give_their_drivers_their_own_state_dir(store, test_kinds, tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        d.mkdir()

    def seen(d):  # what the driver wrote there, once it has written it whole
        path = d / "keeper.seen"
        return path.read_text() if path.exists() else None

    sups = [Supervisor([DriverEntry(name="keeper", kind="test.statedir")], emitter(store), SupervisorSettings(),
                       state_dir=d) for d in dirs]
    for sup in sups:
        sup.start()
    try:
        wait_for(lambda: [seen(d) for d in dirs] == [str(d) for d in dirs], timeout=10)
        (dirs[1] / "keeper.seen").unlink()
        sups[1].replace(DriverEntry(name="keeper", kind="test.statedir"))  # a restart keeps its daemon's dir
        wait_for(lambda: seen(dirs[1]) == str(dirs[1]), timeout=10)
    finally:
        for sup in sups:
            sup.stop()
