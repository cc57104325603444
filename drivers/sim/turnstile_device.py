"""A turnstile controller's behaviour, without any wire: what it does with each request.

The simulator (``drivers.sim.turnstile``) wraps this model in a pty and a codec.
Kept pure and clock-injected so its rules are easy to read and to test: a
grant opens for N passes until a deadline, a lockdown refuses grants, an
active fire alarm refuses lock and lockdown (the hardware's fail-safe wins),
events queue in a bounded buffer while nobody collects them.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from drivers.turnstile import _payload
from drivers.turnstile import messages as m

K = m.EventKind


@dataclass
class _Grant:
    direction: str
    passes_left: int
    deadline: float


class DeviceModel:
    """One controller: mode, flags, counters, a bounded event queue and a pending grant."""

    def __init__(self, queue_max: int = 64, clock=time.monotonic):
        self.mode = m.Mode.LOCKED
        self.emergency = self.tamper = self.held_open = self.fault = False
        self.counters = {"in": 0, "out": 0}
        self.queue: deque[m.DeviceEvent] = deque(maxlen=queue_max)
        self.grant: _Grant | None = None
        self.clock_offset = 0.0
        self._seq = 0
        self._clock = clock

    # --- requests -------------------------------------------------------------------------

    def handle(self, request) -> list:
        """Replies to one request, in the codec-neutral form (Ack/Nak carry the request code)."""
        if isinstance(request, m.Poll):
            return [self._poll(request.ack_seq)]
        if isinstance(request, m.GetStatus):
            return [self.status()]
        if isinstance(request, m.ReadCounters):
            return [m.Counters(self.counters["in"], self.counters["out"])]
        code = _payload.request_code(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return [m.Nak(code, refusal)]
        self._apply(request)
        return [m.Ack(code)]

    def _refusal(self, request) -> m.NakReason | None:
        if isinstance(request, (m.Lock, m.Lockdown)) and self.emergency:
            return m.NakReason.EMERGENCY_ACTIVE
        if isinstance(request, m.Grant):
            if self.mode == m.Mode.LOCKDOWN:
                return m.NakReason.LOCKDOWN_ACTIVE
            if request.passes < 1 or request.timeout_s < 1:
                return m.NakReason.INVALID
        return None

    def _apply(self, request) -> None:
        if isinstance(request, m.Grant):
            self.grant = _Grant(request.direction, request.passes, self._clock() + request.timeout_s)
        elif isinstance(request, m.Deny):
            self.grant = None
        elif isinstance(request, (m.Lock, m.Release)):
            self.mode = m.Mode.LOCKED
        elif isinstance(request, m.Unlock):
            self.mode = m.Mode.FREE
        elif isinstance(request, m.Lockdown):
            self.mode, self.grant = m.Mode.LOCKDOWN, None
        elif isinstance(request, m.SetTime):
            self.clock_offset = request.epoch - time.time()

    def _poll(self, ack_seq: int):
        if self.queue and self.queue[0].seq == ack_seq:
            self.queue.popleft()
        return self.queue[0] if self.queue else self.status()

    def status(self) -> m.Status:
        return m.Status(self.mode, self.emergency, self.tamper, self.held_open, self.fault,
                        min(len(self.queue), 255))

    def ack_event(self, seq: int) -> None:
        """The edge confirmed event ``seq`` (point-to-point)."""
        if self.queue and self.queue[0].seq == seq:
            self.queue.popleft()

    # --- things that happen at the lane ---------------------------------------------------

    def passage(self, direction: str) -> None:
        """Someone went through (the device counts every passage)."""
        self.counters[direction] = (self.counters[direction] + 1) % 2**32
        if self.grant and self.grant.direction == direction:
            self.grant.passes_left -= 1
            if self.grant.passes_left <= 0:
                self.grant = None
        self._event(K.PASSAGE, direction, counter=self.counters[direction])

    def alarm(self, kind: m.EventKind, direction: str | None = None, arg: int = 0) -> None:
        """forced, tailgate, wrong_way, held_open, tamper, emergency, fault."""
        if kind == K.EMERGENCY:
            self.emergency = bool(arg)
        elif kind == K.TAMPER:
            self.tamper = bool(arg)
        elif kind == K.HELD_OPEN:
            self.held_open = True
        elif kind == K.FAULT:
            self.fault = arg != 0
        self._event(kind, direction, arg=arg)

    def tick(self) -> None:
        """Time passes: an unused grant expires."""
        if self.grant and self._clock() >= self.grant.deadline:
            direction, self.grant = self.grant.direction, None
            self._event(K.GRANT_TIMEOUT, direction)

    def _event(self, kind, direction=None, arg=0, counter=0) -> None:
        self._seq = self._seq % 0xFFFF + 1   # 1..65535; 0 means "nothing acknowledged yet"
        self.queue.append(m.DeviceEvent(self._seq, kind, direction, arg, counter,
                                        int(time.time() + self.clock_offset) % 2**32))
