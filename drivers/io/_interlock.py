"""A sally port's interlock: two doors, never both open. Pure logic, no I/O.

The rule lives in one function, ``may_release``: a door may be released only
when the other door's contact, read *after* its own release ended, says
closed (a read taken while it was still released may predate it opening). "Known" matters: after a restart, or while the module is
silent, a door's state is unknown and nothing is released. A door that opens
without being released is forced (an alarm); the interlock cannot stop a
crowbar, but it never adds a second open door of its own.

A passage is a cycle: the first door is released, opens, closes (the person is
in the airlock), then the second door is released, opens, closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Out = tuple[str, dict, str]
OTHER = {"outer": "inner", "inner": "outer"}
FIRST = {"in": "outer", "out": "inner"}


@dataclass
class Door:
    closed: bool | None = None     # None: not read yet (start, module silent)
    read_at: float = float("-inf")  # when the contact was last read
    released_until: float = 0.0    # the release coil is on until then
    opened: bool = False           # opened since its last release (for the cycle)

    def released(self, now: float) -> bool:
        return now < self.released_until


@dataclass
class Cycle:
    direction: str
    deadline: float
    stage: int = 0  # 0: first door released, 1: person in the airlock, 2: second door released


@dataclass
class Interlock:
    release_s: float = 3.0
    read_grace_s: float = 0.5
    doors: dict[str, Door] = field(default_factory=lambda: {"outer": Door(), "inner": Door()})
    cycle: Cycle | None = None

    def may_release(self, door: str, now: float) -> str | None:
        """None when ``door`` may be released now; else why not (the interlock's refusal)."""
        other = self.doors[OTHER[door]]
        if self.doors[door].closed is None or other.closed is None:
            return "door state unknown (not read since start, or the module is silent)"
        if other.released(now):
            return f"the {OTHER[door]} door is released"
        if not other.closed:
            return f"the {OTHER[door]} door is open"
        if other.read_at < other.released_until:
            return f"the {OTHER[door]} door has not been read closed since its release ended"
        return None

    def release(self, door: str, now: float) -> str | None:
        """Release ``door`` if the interlock allows; the refusal otherwise."""
        refusal = self.may_release(door, now)
        if refusal is None:
            self.doors[door].released_until = now + self.release_s
            self.doors[door].opened = False
        return refusal

    def relock(self) -> None:
        for door in self.doors.values():
            door.released_until = 0.0

    def unknown(self) -> None:
        """The module went silent: nothing is known any more."""
        for door in self.doors.values():
            door.closed = None
        self.relock()

    def on_closed(self, door: str, closed: bool, now: float) -> list[Out]:
        """A door contact read; events for a change."""
        d = self.doors[door]
        before, d.closed, d.read_at = d.closed, closed, now
        # a read shortly after the release ended may still show the opening it allowed
        allowed = now < d.released_until + self.read_grace_s
        if not closed and allowed:
            d.opened = True
        if before is None or before == closed:
            return []
        out: list[Out] = [("sallyport.door", {"door": door, "open": not closed}, "normal")]
        if not closed and not allowed:
            out.append(("sallyport.forced", {"door": door}, "alarm"))
        return out

    def wants(self, now: float) -> tuple[str | None, list[Out]]:
        """Advance the passage cycle: a door to release now, and events (passage, timeout)."""
        c = self.cycle
        if c is None:
            return None, []
        if now > c.deadline:
            self.cycle = None
            self.relock()
            return None, [("turnstile.grant_timeout", {"direction": c.direction}, "normal")]
        first, second = FIRST[c.direction], OTHER[FIRST[c.direction]]
        if c.stage == 0 and self.doors[first].opened and self.doors[first].closed:
            c.stage = 1  # through the first door, which is closed again: in the airlock
        if c.stage == 1 and self.release(second, now) is None:
            c.stage = 2
            return second, []
        if c.stage == 2 and self.doors[second].opened and self.doors[second].closed:
            self.cycle = None
            return None, [("turnstile.passage", {"direction": c.direction}, "normal")]
        return None, []
