"""Wrong-PIN lockouts per card holder (services.gate.pinlock) with fake clocks: when a lockout
ends (both clocks), what a restart keeps, and the config and command checks around it.
The attack against the real daemon and readers is tests/security/test_pin_lockout.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from edge.commands.effects import effect_of
from edge.config import Settings
from edge.errors import CommandError
from edge.uptime import Clocks
from services.gate import commands
from services.gate.pinlock import PinLockouts
from services.gate.state import GateState

LOCK_S = 900.0


class FakeClocks:
    def __init__(self, wall: float = 1_700_000_000.0, up: float = 5_000.0):
        self.wall, self.up = wall, up

    def clocks(self) -> Clocks:
        return Clocks(now=lambda: self.wall, uptime=lambda: self.up)

    def run(self, seconds: float) -> None:  # time passes with the device on: both clocks move
        self.wall += seconds
        self.up += seconds


@pytest.fixture
def state(tmp_path):
    s = GateState(tmp_path)
    yield s
    s.close()


def _locks(state, t: FakeClocks, max_wrong: int = 3) -> PinLockouts:
    return PinLockouts(state, t.clocks(), max_wrong, LOCK_S)


def test_third_wrong_pin_locks_and_both_clocks_must_pass(state):
    t = FakeClocks()
    pins = _locks(state, t)
    assert pins.wrong("P-1") is None and pins.wrong("P-1") is None
    assert pins.remaining("P-1") == 0
    lockout = pins.wrong("P-1")
    assert lockout is not None and (lockout.holder, lockout.wrong) == ("P-1", 3)
    assert pins.remaining("P-1") == pytest.approx(LOCK_S)
    assert pins.remaining("P-2") == 0  # another holder is not touched
    t.wall += 10 * 86400  # the wall clock pushed forward: the uptime has not run the lockout
    assert pins.remaining("P-1") == pytest.approx(LOCK_S)
    t.wall -= 10 * 86400
    t.up += LOCK_S  # the uptime alone (wall clock held back): not enough either
    assert pins.remaining("P-1") == pytest.approx(LOCK_S)
    t.wall += LOCK_S - 1
    assert pins.remaining("P-1") == pytest.approx(1)
    t.wall += 1  # both have passed: the lockout is over
    assert pins.remaining("P-1") == 0
    assert [x["holder"] for x in pins.summary()] == []
    relock = pins.wrong("P-1")  # but the count is not: the next wrong PIN locks again at once
    assert relock is not None and relock.wrong == 4 and pins.remaining("P-1") == pytest.approx(LOCK_S)


def test_a_correct_pin_resets_the_count(state):
    t = FakeClocks()
    pins = _locks(state, t)
    pins.wrong("P-1")
    pins.wrong("P-1")
    pins.right("P-1")
    assert pins.wrong_count("P-1") == 0
    assert pins.wrong("P-1") is None and pins.wrong("P-1") is None  # two more: still 2 in a row
    assert pins.remaining("P-1") == 0 and pins.wrong("P-1") is not None


def test_lockout_and_count_survive_a_restart_bounded_by_the_span(state, tmp_path):
    t = FakeClocks()
    pins = _locks(state, t)
    for _ in range(3):
        pins.wrong("P-1")
    pins.wrong("P-2")
    t.run(100)
    again = _locks(state, t)  # a restart: the same gate.db
    assert again.remaining("P-1") == pytest.approx(LOCK_S - 100)
    assert again.wrong_count("P-2") == 1 and again.wrong_count("P-1") == 3
    # The persisted uptime was lost (a new commands.db: uptime 0) and the wall clock jumped ahead
    # when the lockout began: still locked, but for no longer than the lockout itself from now.
    lost = FakeClocks(wall=t.wall, up=0.0)
    state.set_pin_count("P-3", 3, t.wall + 365 * 86400, 10**9)
    bounded = _locks(state, lost)
    assert bounded.remaining("P-1") == pytest.approx(LOCK_S)
    assert bounded.remaining("P-3") == pytest.approx(LOCK_S)
    lost.run(LOCK_S)
    assert bounded.remaining("P-1") == 0 and bounded.remaining("P-3") == 0


def test_clear_forgets_count_and_lockout(state):
    t = FakeClocks()
    pins = _locks(state, t, max_wrong=1)
    assert pins.clear("P-1") is None
    pins.wrong("P-1")
    (locked,) = pins.summary()
    assert {k: locked[k] for k in ("holder", "wrong_pins", "remaining_s")} == {
        "holder": "P-1", "wrong_pins": 1, "remaining_s": LOCK_S}
    # the end as the trusted clock reads it now plus what is left: what `edge gate status` prints
    assert datetime.fromisoformat(locked["until"]).timestamp() == pytest.approx(t.wall + LOCK_S)
    status = pins.status()
    assert status["wrong_pin_counts"] == {"P-1": 1} and "PIN-LOCKED cards: P-1 until" in status["note"]
    assert "edge gate clear-pin-lockout HOLDER" in status["note"] and "edge cmd approve ID" in status["note"]
    assert pins.clear("P-1") == (1, pytest.approx(LOCK_S))
    assert pins.remaining("P-1") == 0 and _locks(state, t).wrong_count("P-1") == 0


def test_one_pin_check_per_holder_at_a_time(state):
    pins = _locks(state, FakeClocks())
    assert pins.begin_check("P-1", "ap-a") and pins.begin_check("P-1", "ap-a")
    assert not pins.begin_check("P-1", "ap-b")  # a cloned card at another lane
    assert pins.begin_check("P-2", "ap-b")
    pins.end_check("P-1", "ap-b")  # not its slot: nothing happens
    assert not pins.begin_check("P-1", "ap-b")
    pins.end_check("P-1", "ap-a")
    assert pins.begin_check("P-1", "ap-b")


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("max_wrong_pins", 0, "greater than or equal to 1"), ("max_wrong_pins", 11, "less than or equal to 10"),
    ("pin_lockout_s", 5, "greater than or equal to 60"), ("pin_lockout_s", 10**6, "less than or equal to 86400"),
    ("max_wrong_pins", "three", "valid integer")])
def test_bad_settings_name_the_key(tmp_path, key, value, expected):
    with pytest.raises(ValidationError) as err:
        Settings(device_id="d", site="s", role="gate", state_dir=tmp_path, gate={key: value})
    text = str(err.value)
    assert f"gate.{key}" in text and expected in text, text


def test_defaults_are_the_safe_ones(tmp_path):
    gate = Settings(device_id="d", site="s", role="gate", state_dir=tmp_path).gate
    assert (gate.max_wrong_pins, gate.pin_lockout_s) == (3, 900.0)


def test_clearing_a_lockout_is_a_barrier_command_with_checked_arguments():
    effects = commands.effects({})
    assert effect_of(effects, "clear_pin_lockout", {"holder": "P-1", "reason": "verified by phone"}) == "barrier"
    commands.check({}, "clear_pin_lockout", {"holder": "staff-0042", "reason": "verified by phone"})
    for bad, what in (({"holder": "P 1;rm", "reason": "because"}, "holder"),
                      ({"holder": "P-1", "reason": "no"}, "reason"),
                      ({"holder": "P-1"}, "reason"),
                      ({"holder": "P-1", "reason": "because", "all": True}, "all")):
        with pytest.raises(CommandError, match=what):
            commands.check({}, "clear_pin_lockout", bad)
