"""Turnstile controller simulator: the far end of a real pty, speaking a real codec.

``TurnstileSim(codec, path).start()`` opens a pty, links it at ``path`` and
answers the driver like a controller on a serial line: bytes are paced at the
configured baud rate (a pty has no baud rate of its own), requests are
answered by ``DeviceModel``, events are queued, polled (rs485-bus) or pushed
and retransmitted until acknowledged (bcc-p2p). Scenario methods make things
happen at the lane or on the wire: passages, alarms, noise, NAKs, silence,
slow replies and unplug/replug.
"""

from __future__ import annotations

import os
import random
import select
import threading
import time
from collections.abc import Callable

from drivers.sim._pty import PtyLine
from drivers.sim.turnstile_device import DeviceModel
from drivers.turnstile import _payload
from drivers.turnstile import messages as m
from drivers.turnstile.codecs import get_codec

_DATA_REPLIES = (m.Status, m.Counters, m.DeviceEvent)
_UNFILTERED = (m.Poll, m.GetStatus, m.EventAck, m.Ack)  # never dropped/NAKed by drop_next/nak_next


class TurnstileSim:
    """One serial line with one (point-to-point) or several (bus) simulated controllers."""

    def __init__(self, codec: str, path, *, baudrate: int = 115200, addresses=(1,), pace: bool = True,
                 queue_max: int = 64, auto_pass: bool = False, auto_pass_delay_s: float = 0.05,
                 retransmit_s: float = 0.5, echo: bool = False, seed: int | None = None):
        self.codec = get_codec(codec)
        if not self.codec.polled:
            addresses = (1,)
        self.line = PtyLine(path)
        self.baudrate, self.pace = baudrate, pace
        self.devices = {a: DeviceModel(queue_max) for a in addresses}
        self.auto_pass, self.auto_pass_delay_s = auto_pass, auto_pass_delay_s
        self.retransmit_s = retransmit_s
        self.echo = echo  # a 2-wire RS-485 adapter hears its own transmission
        self.lost_bytes = 0
        self.requests: list[tuple[int, object]] = []   # everything received, for tests
        self.changed = threading.Condition(threading.RLock())
        self._rng = random.Random(seed)
        self._decoder = self.codec.decoder()
        self._tx_free = self._rx_done = 0.0
        self._tx_lock = threading.Lock()
        self._drop = self._nak = 0
        self._stray = b""
        self._muted = False
        self.slow_s = 0.0
        self._pending_passes: list[tuple[float, int, str]] = []
        self._outstanding: tuple[int, float] | None = None   # bcc: (seq, sent_at)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="turnstile-sim", daemon=True)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> TurnstileSim:
        self.line.open()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self.changed:
            self.line.close()

    @property
    def path(self) -> str:
        return str(self.line.path)

    def char_time_s(self) -> float:
        return 10.0 / self.baudrate   # 8N1: start + 8 data + stop bits

    # --- scenario: the lane -----------------------------------------------------------------

    def passage(self, direction: str = "in", count: int = 1, address: int = 1) -> None:
        with self.changed:
            for _ in range(count):
                self.devices[address].passage(direction)
            self.changed.notify_all()

    def alarm(self, kind: str, direction: str | None = None, arg: int = 0, address: int = 1) -> None:
        """forced | tailgate | wrong_way | held_open | tamper | emergency | fault (arg: 1 on / 0 off / code)."""
        with self.changed:
            self.devices[address].alarm(m.EventKind[kind.upper()], direction, arg)
            self.changed.notify_all()

    # --- scenario: the wire -----------------------------------------------------------------

    def noise(self, nbytes: int = 16) -> None:
        """Random bytes on the line (between frames)."""
        self._send(bytes(self._rng.randrange(256) for _ in range(nbytes)))

    def drop_next(self, count: int = 1) -> None:
        """Ignore the next ``count`` commands (not polls/status): the driver must retry."""
        with self.changed:
            self._drop += count

    def stray_next(self, data: bytes = b"\x06") -> None:
        """The next command never reaches the controller, and ``data`` (a stray ACK byte, say)
        appears on the line in its reply window: noise, or someone on the wire."""
        with self.changed:
            self._stray = data

    def nak_next(self, count: int = 1) -> None:
        """Refuse the next ``count`` commands with NAK (busy)."""
        with self.changed:
            self._nak += count

    def mute(self, on: bool = True) -> None:
        """Answer nothing at all (a controller without power)."""
        with self.changed:
            self._muted = on

    def unplug(self) -> None:
        with self.changed:
            self.line.close()
            self._decoder = self.codec.decoder()
            self._outstanding = None

    def replug(self) -> None:
        with self.changed:
            if not self.line.plugged:
                self.line.open()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def received(self, cls) -> list:
        with self.changed:
            return [msg for _, msg in self.requests if isinstance(msg, cls)]

    # --- the device's loop ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            data = self._read(0.005)
            with self.changed:
                got = self._decoder.feed(data) if data else self._decoder.idle()
            for rx in got:
                self._on_request(rx.address, rx.message)
            self._on_tick()

    def _read(self, timeout: float) -> bytes:
        fd = self.line.master
        if fd is None:
            self._stop.wait(timeout)
            return b""
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            data = os.read(fd, 4096) if ready else b""
        except (OSError, ValueError):   # unplugged under our feet, or no host end yet
            self._stop.wait(timeout)
            return b""
        if data and self.echo:
            try:
                os.write(fd, data)   # back to the host, as its own receiver would hear it
            except OSError:
                pass
        if data and self.pace:
            # The last byte of what we read would only now have finished arriving on a real line.
            self._rx_done = max(time.monotonic(), self._rx_done) + len(data) * self.char_time_s()
            self._sleep_until(self._rx_done)
        return data

    def _on_request(self, address: int, msg) -> None:
        device = self.devices.get(address)
        if device is None or isinstance(msg, _DATA_REPLIES + (m.Nak,)):
            return   # another address, or our own kind of traffic echoed back
        with self.changed:
            self.requests.append((address, msg))
            self.changed.notify_all()
            if self._muted:
                return
            if isinstance(msg, (m.Ack, m.EventAck)):   # bcc: the edge confirms our event
                if self._outstanding:
                    device.ack_event(self._outstanding[0])
                    self._outstanding = None
                return
            if not isinstance(msg, _UNFILTERED) and self._stray:
                stray, self._stray = self._stray, b""
                self._send(stray)
                return
            if not isinstance(msg, _UNFILTERED) and self._drop:
                self._drop -= 1
                return
            if not isinstance(msg, _UNFILTERED) and self._nak:
                self._nak -= 1
                replies = [m.Nak(_payload.request_code(msg), m.NakReason.BUSY)]
            else:
                replies = device.handle(msg)
            if isinstance(msg, m.Grant) and isinstance(replies[0], m.Ack) and self.auto_pass:
                at = time.monotonic() + self.auto_pass_delay_s
                self._pending_passes += [(at, address, msg.direction)] * msg.passes
        if self.slow_s:
            self._stop.wait(self.slow_s)
        self._send(b"".join(self._encode(r, address) for r in replies))

    def _encode(self, reply, address: int) -> bytes:
        if self.codec.ack_before_data and isinstance(reply, (m.Status, m.Counters)):
            return self.codec.encode(m.Ack(), address) + self.codec.encode(reply, address)
        return self.codec.encode(reply, address)

    def _on_tick(self) -> None:
        now = time.monotonic()
        with self.changed:
            due = [p for p in self._pending_passes if p[0] <= now]
            self._pending_passes = [p for p in self._pending_passes if p[0] > now]
            for _, address, direction in due:
                self.devices[address].passage(direction)
            for device in self.devices.values():
                device.tick()
            frame = self._push(now) if not self.codec.polled and self.line.plugged else b""
            if due:
                self.changed.notify_all()
        if frame:
            self._send(frame)

    def _push(self, now: float) -> bytes:
        """bcc-p2p: send the oldest event, again every retransmit_s until the edge ACKs it."""
        queue = self.devices[1].queue
        if not queue or self._muted:
            return b""
        if self._outstanding and self._outstanding[0] == queue[0].seq \
                and now - self._outstanding[1] < self.retransmit_s:
            return b""
        self._outstanding = (queue[0].seq, now)
        return self.codec.encode(queue[0])

    def _send(self, data: bytes) -> None:
        if not data:
            return
        with self._tx_lock:
            if self.pace:
                self._tx_free = max(time.monotonic(), self._tx_free) + len(data) * self.char_time_s()
                self._sleep_until(self._tx_free)
            fd = self.line.master
            if fd is None:
                return   # unplugged: the bytes go nowhere, as on a real unplugged cable
            try:
                os.write(fd, data)
            except BlockingIOError:
                with self.changed:            # nobody reads the host end: the bytes are lost
                    self.lost_bytes += len(data)
                    self.changed.notify_all()
            except OSError:
                pass     # the line was just unplugged

    def _sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
