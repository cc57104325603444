"""What the inputs of a relay turnstile mean: edges -> ``turnstile.*`` events. Pure, no I/O.

A relay module keeps no event queue, no sequence numbers and no counters:
the driver sees levels and makes events from their changes. ``device_seq``
is therefore the driver's own count (wrapping at 65535) and ``device_time``
the edge device's clock at the poll that saw the change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

Out = tuple[str, dict, str]  # (event type, payload, priority)


@dataclass
class Grant:
    passes_left: int
    deadline: float
    passes: int


class LaneLogic:
    def __init__(self, address: int):
        self.address = address
        self.inputs: dict[str, bool] | None = None  # None: not read yet
        self.grants: dict[str, Grant] = {}
        self.counters = {"in": 0, "out": 0}
        self.emergency = False
        self.free = False       # unlocked: both ways open, no grant needed
        self.lockdown = False   # no grant until released
        self._seq = 0

    def stamp(self, **payload) -> dict:
        self._seq = self._seq % 65535 + 1
        return {"address": self.address, "device_seq": self._seq, "device_time": int(time.time()), **payload}

    def on_inputs(self, now_in: dict[str, bool]) -> tuple[list[Out], list[str]]:
        """Events for what changed since the last read, and directions to pulse again."""
        before, self.inputs = self.inputs, dict(now_in)
        out: list[Out] = []
        pulses: list[str] = []
        if before is None:  # first read: a baseline; a contact already active is still news
            before = {k: False for k in now_in}
        for name in ("fire_alarm", "tamper", "forced", "passage_in", "passage_out"):
            if name not in now_in or now_in[name] == before.get(name):
                continue
            level = now_in[name]
            if name == "fire_alarm":
                self.emergency = level
                out.append(("turnstile.emergency", {"address": self.address, "active": level}, "alarm"))
            elif name == "tamper":
                out.append(("turnstile.tamper", self.stamp(active=level), "alarm"))
            elif name == "forced" and level:
                out.append(("turnstile.forced", self.stamp(), "alarm"))
            elif name.startswith("passage") and level:
                self._passage(name.removeprefix("passage_"), out, pulses)
        return out, pulses

    def _passage(self, direction: str, out: list[Out], pulses: list[str]) -> None:
        self.counters[direction] += 1
        out.append(("turnstile.passage", self.stamp(direction=direction, counter=self.counters[direction]),
                    "normal"))
        grant = self.grants.get(direction)
        if grant is not None:
            grant.passes_left -= 1
            if grant.passes_left > 0:
                pulses.append(direction)  # one pulse lets one person through
            else:
                del self.grants[direction]
        elif not (self.free or self.emergency):
            # nobody was let through this way: the arm was pushed or the lane tailgated
            out.append(("turnstile.forced", self.stamp(direction=direction), "alarm"))

    def grant(self, direction: str, passes: int, timeout_s: float, now: float) -> None:
        self.grants[direction] = Grant(passes, now + timeout_s, passes)

    def cancel(self) -> None:
        self.grants.clear()

    def expire(self, now: float) -> list[Out]:
        out = []
        for direction, grant in list(self.grants.items()):
            if grant.deadline <= now:
                del self.grants[direction]
                out.append(("turnstile.grant_timeout", self.stamp(direction=direction), "normal"))
        return out
