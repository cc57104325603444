"""Clock sanity: events made while the clock is unsynced or after a backwards step are flagged."""

from __future__ import annotations

import json

import pytest

from edge.clock import ClockMonitor, kernel_ntp_synced
from edge.config import Settings
from edge.daemon import Daemon
from edge.store import Store


class FakeClock:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, wall: float = 1_800_000_000.0):
        self.now, self.mono = wall, 1000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


def monitor(clock: FakeClock, ntp=lambda: True) -> ClockMonitor:
    return ClockMonitor(ntp_probe=ntp, wall=clock.wall, mono=clock.monotonic)


def test_synced_while_the_clock_moves_forward():
    clock = FakeClock()
    m = monitor(clock)
    for _ in range(5):
        clock.advance(0.5)
        assert m.state() == "synced"


def test_backwards_step_is_flagged_until_the_clock_passes_the_old_high_water():
    clock = FakeClock()
    m = monitor(clock)
    clock.advance(100)
    assert m.state() == "synced"
    clock.now -= 3600  # someone set the clock back an hour (monotonic keeps going)
    clock.mono += 1
    assert m.state() == "stepped_back"
    clock.advance(1800)
    assert m.state() == "stepped_back"  # still before the latest time seen
    clock.advance(1802)
    assert m.state() == "synced"


def test_small_jitter_backwards_is_tolerated():
    clock = FakeClock()
    m = monitor(clock)
    clock.advance(10)
    m.state()
    clock.now -= 0.5
    assert m.state() == "synced"


@pytest.mark.parametrize("probe, expected", [(lambda: False, "unsynced"), (lambda: None, "unknown")])
def test_ntp_probe_verdicts(probe, expected):
    assert monitor(FakeClock(), probe).state() == expected


def test_probe_is_asked_again_only_every_few_seconds():
    clock, answers = FakeClock(), [True, False]
    calls: list[int] = []

    def probe():
        calls.append(1)
        return answers[min(len(calls) - 1, 1)]

    m = monitor(clock, probe)
    assert m.state() == "synced"
    clock.advance(1)
    assert m.state() == "synced" and len(calls) == 1  # cached: no syscall per event
    clock.advance(10)
    assert m.state() == "unsynced" and len(calls) == 2


def test_kernel_probe_answers_without_raising():
    assert kernel_ntp_synced() in (True, False, None)


def test_store_system_events_carry_the_clock_flag(tmp_path):
    clock = FakeClock()
    m = monitor(clock)
    store = Store(tmp_path / "state", device="d", site="s", clock=m)
    try:
        clock.advance(100)
        assert store.emit_system("system.test_ok", {}).clock == "synced"
        clock.now -= 600
        event = store.emit_system("system.test_after_step", {})
        assert event.clock == "stepped_back"
        assert json.loads(store.tail(1)[0][1])["clock"] == "stepped_back"
    finally:
        store.close()


def test_daemon_emit_flags_driver_events_and_never_reorders_them(tmp_path):
    """Events keep their store order (seq) after a backwards step; only the flag changes."""
    settings = Settings(device_id="d", site="s", role="gate", state_dir=tmp_path / "state")
    clock = FakeClock()
    daemon = Daemon(settings)
    daemon.clock = monitor(clock, ntp=lambda: False)
    daemon.store = Store(settings.state_dir, device="d", site="s", clock=daemon.clock)
    try:
        first = daemon.emit("sim.tick", {"n": 1}, "normal", "hb")
        clock.now -= 3600
        second = daemon.emit("sim.tick", {"n": 2}, "normal", "hb")
        assert first.clock == "unsynced" and second.clock == "stepped_back"
        assert second.seq == first.seq + 1
        rows = [json.loads(body) for _s, body, _a in daemon.store.tail(2)]
        assert [r["payload"]["n"] for r in rows] == [1, 2]
        assert [r["clock"] for r in rows] == ["unsynced", "stepped_back"]
    finally:
        daemon.store.close()
