"""The sally-port interlock in a random world: 1 000 steps, never both doors open."""

from __future__ import annotations

import random

import pytest

from drivers.io._interlock import Cycle, Interlock


class World:
    """Physical doors: one opens only while its release coil is on; anyone may close it."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.lock = Interlock(release_s=0.5)
        self.open = {"outer": False, "inner": False}
        self.now = 0.0
        self.events: list[str] = []

    def coil(self, door: str) -> bool:
        return self.now < self.lock.doors[door].released_until

    def step(self) -> None:
        r = self.rng.random()
        door = self.rng.choice(["outer", "inner"])
        if r < 0.15:  # someone asks for a door (a grant, or an officer's release)
            self.lock.release(door, self.now)
        elif r < 0.25 and self.lock.cycle is None:
            self.lock.cycle = Cycle(self.rng.choice(["in", "out"]), self.now + 30)
            self.lock.release({"in": "outer", "out": "inner"}[self.lock.cycle.direction], self.now)
        elif r < 0.55:  # a person pushes: the door opens only if its lock is released
            if self.coil(door):
                self.open[door] = True
        elif r < 0.75:
            self.open[door] = False
        # the driver polls after every step: one door's read may lag the other's by a poll
        for d in (["outer", "inner"] if self.rng.random() < 0.5 else [self.rng.choice(["outer", "inner"])]):
            self.events += [e[0] for e in self.lock.on_closed(d, not self.open[d], self.now)]
        self.lock.wants(self.now)
        self.now += self.rng.choice([0.01, 0.02, 0.05])


@pytest.mark.parametrize("seed", range(10))
def test_1000_random_steps_never_both_doors_open(seed):
    world = World(seed)
    for i in range(1000):
        world.step()
        assert not (world.open["outer"] and world.open["inner"]), f"seed {seed}, step {i}: both doors open"
    assert "sallyport.forced" not in world.events  # nobody forced anything in this world
    assert world.events.count("sallyport.door") > 50  # the doors did move


def test_unknown_state_releases_nothing():
    lock = Interlock()
    assert "unknown" in lock.release("outer", 0.0)
    lock.on_closed("outer", True, 0.0)
    assert "unknown" in lock.release("outer", 0.0)  # the inner door not read yet
    lock.on_closed("inner", True, 0.0)
    assert lock.release("outer", 0.0) is None
    assert "released" in lock.release("inner", 0.1)
    lock.unknown()  # module silent: back to knowing nothing
    assert "unknown" in lock.release("inner", 10.0)


def test_a_read_during_the_release_does_not_count():
    lock = Interlock(release_s=1.0)
    lock.on_closed("outer", True, 0.0)
    lock.on_closed("inner", True, 0.0)
    assert lock.release("outer", 0.0) is None
    lock.on_closed("outer", True, 0.5)  # read while released: it may open right after
    assert "not been read closed" in lock.release("inner", 1.5)
    lock.on_closed("outer", True, 1.6)
    assert lock.release("inner", 1.7) is None


def test_door_opened_without_release_is_forced():
    lock = Interlock()
    lock.on_closed("outer", True, 0.0)
    lock.on_closed("inner", True, 0.0)
    events = lock.on_closed("inner", False, 5.0)
    assert ("sallyport.forced", {"door": "inner"}, "alarm") in events


def test_passage_cycle_in():
    lock = Interlock(release_s=2.0)
    for d in ("outer", "inner"):
        lock.on_closed(d, True, 0.0)
    lock.cycle = Cycle("in", 60.0)
    assert lock.release("outer", 0.0) is None
    lock.on_closed("outer", False, 0.5)
    assert lock.wants(0.6) == (None, [])  # the outer door is open: the inner one waits
    lock.on_closed("outer", True, 3.0)
    assert lock.wants(3.1)[0] == "inner"
    lock.on_closed("inner", False, 3.5)
    lock.on_closed("inner", True, 4.5)
    assert lock.wants(4.6) == (None, [("turnstile.passage", {"direction": "in"}, "normal")])
