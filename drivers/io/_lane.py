"""What the inputs of a relay turnstile mean: edges -> ``turnstile.*`` events. Pure, no I/O.

A relay module keeps no event queue, no sequence numbers and no counters:
the driver sees levels and makes events from their changes. ``device_seq``
is therefore the driver's own count (wrapping at 65535) and ``device_time``
the edge device's clock at the poll that saw the change.

A tamper contact that flaps (a loose switch, or a module reporting garbage) would be an alarm
per poll, never evicted: its changes go through ``edge.ratelimit.ChangeFold`` (a few alarmed,
the rest counted in ``turnstile.flood``, the state they leave alarmed at the next report).
Forced passages (the ``forced`` input, a passage without a grant) go through a fold of their own
(``what: forced``): the first of a burst is alarmed at once, whatever the tamper contact does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edge.ratelimit import ChangeFold

Out = tuple[str, dict, str]  # (event type, payload, priority)


@dataclass
class Grant:
    passes_left: int
    deadline: float
    passes: int


class LaneLogic:
    def __init__(self, address: int, flood_report_s: float = 60.0):
        self.address = address
        self.inputs: dict[str, bool] | None = None  # None: not read yet
        self.grants: dict[str, Grant] = {}
        self.counters = {"in": 0, "out": 0}
        self.emergency = False
        self.free = False       # unlocked: both ways open, no grant needed
        self.lockdown = False   # no grant until released
        self._seq = 0
        self._folded: list[Out] = []  # what the folds raised, for the caller to emit
        self.tamper = ChangeFold(flood_report_s, self._tamper_alarm, self._report("status_changes", "tamper changes"),
                                 initial={"tamper": False})
        # key: "input" (the forced contact) or the direction of a passage without a grant
        self.forced = ChangeFold(flood_report_s, self._forced_alarm, self._report("forced", "forced passages"))

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
                self.tamper.changed("tamper", level)
                out.extend(self._take_folded())
            elif name == "forced" and level:
                self.forced.changed("input", True)
                out.extend(self._take_folded())
            elif name.startswith("passage") and level:
                self._passage(name.removeprefix("passage_"), out, pulses)
        return out, pulses

    def tick(self) -> list[Out]:
        """The floods' reports due now, and the state they left (call once a poll)."""
        self.tamper.tick()
        self.forced.tick()
        return self._take_folded()

    def _take_folded(self) -> list[Out]:
        out, self._folded = self._folded, []
        return out

    def _tamper_alarm(self, _key: str, level: bool) -> None:
        self._folded.append(("turnstile.tamper", self.stamp(active=level), "alarm"))

    def _forced_alarm(self, key: str, _active: bool) -> None:
        payload = self.stamp() if key == "input" else self.stamp(direction=key)
        self._folded.append(("turnstile.forced", payload, "alarm"))

    def _report(self, what: str, changes: str):
        def report(state: str, suppressed: int, total: int, duration_s: float) -> None:
            fold = self.tamper if what == "status_changes" else self.forced
            payload = fold.payload(state, suppressed, total, duration_s, changes)
            self._folded.append(("turnstile.flood", {"address": self.address, "what": what, **payload},
                                 "alarm" if state == "started" else "normal"))
        return report

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
            self.forced.changed(direction, True)
            out.extend(self._take_folded())

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
