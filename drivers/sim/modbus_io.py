"""A Modbus relay/input module played by pymodbus's own server, on a local TCP port.

Coils are the relays (every write is logged with its time, so a test sees a
release pulse's start and end), discrete inputs are the contacts a test sets.
``silent = True`` makes the module stop answering while the TCP connection
stays up: the hardest failure for a poller to notice. ``reply_filter`` (a
function of a reply frame, MBAP header and PDU, to the frame sent) plays a
module that answers wrongly.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import threading
import time

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

_BITS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PtyBridge:
    """Two ptys joined back to back: a serial cable between two named ports, without socat."""

    def __init__(self):
        import tty

        self.fds = []
        self.paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            self.fds.append((master, slave))
            self.paths.append(os.ttyname(slave))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="pty-bridge", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        (a, _), (b, _) = self.fds
        other = {a: b, b: a}
        while not self._stop.is_set():
            ready, _, _ = select.select([a, b], [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(other[fd], data)
                except (BlockingIOError, OSError):
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for pair in self.fds:
            for fd in pair:
                os.close(fd)


class ModbusIoSim:
    """The module on TCP (default), or on a serial line (``rtu=True``: ``serial_path`` is the
    driver's end of a pty cable, the server holds the other end)."""

    def __init__(self, port: int | None = None, unit: int = 1, rtu: bool = False, baudrate: int = 115200):
        self.port = port or free_port()
        self.unit = unit
        self.bridge = _PtyBridge() if rtu else None
        self.serial_path = self.bridge.paths[1] if self.bridge else None
        self.baudrate = baudrate
        self.inputs = [False] * _BITS
        self.coils = [False] * _BITS
        self.coil_log: list[tuple[float, int, bool]] = []  # (monotonic time, coil, level)
        self.reads = 0
        self.silent = False
        self.reply_filter = None  # hostile tests: bytes -> bytes, each reply frame before it is sent
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: ModbusTcpServer | None = None
        self._thread = threading.Thread(target=self._main, name="modbus-sim", daemon=True)
        self._ready = threading.Event()

    async def _action(self, fc, start, address, count, regs, set_values):
        with self._cond:
            if fc == 2:  # read discrete inputs: registers of 16 packed bits, LSB first
                self.reads += 1
                for i in range(len(regs)):
                    base = (start + i) * 16
                    regs[i] = sum(1 << b for b in range(16) if base + b < _BITS and self.inputs[base + b])
            elif fc in (5, 15) and set_values is not None:
                for i, level in enumerate(set_values):
                    self.coils[address + i] = bool(level)
                    self.coil_log.append((time.monotonic(), address + i, bool(level)))
            self._cond.notify_all()
        return None

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending and self.silent:
            return b""
        rewrite = self.reply_filter
        return rewrite(data) if sending and rewrite is not None else data

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        bits = [SimData(0, count=_BITS, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(id=self.unit, simdata=(bits, list(bits), regs, list(regs)), action=self._action)

        async def serve():
            if self.bridge is not None:
                self._server = ModbusSerialServer(device, port=self.bridge.paths[0], baudrate=self.baudrate,
                                                  trace_packet=self._trace)
            else:
                self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port), trace_packet=self._trace)
            self._ready.set()
            await self._server.serve_forever()
        self._loop.run_until_complete(serve())

    def start(self) -> ModbusIoSim:
        self._thread.start()
        self._ready.wait(5)
        if self.bridge is not None:
            return self
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # listening once a connect succeeds
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(5)
        self._thread.join(5)
        if self.bridge is not None:
            self.bridge.close()

    def set_input(self, address: int, level: bool) -> None:
        with self._cond:
            self.inputs[address] = level

    def wait_reads(self, count: int = 2, timeout: float = 5.0) -> bool:
        """Until the poller has read the inputs ``count`` more times."""
        with self._cond:
            target = self.reads + count
            return self._cond.wait_for(lambda: self.reads >= target, timeout)

    def pulse_input(self, address: int) -> None:
        """A contact closes long enough for the poller to see it, then opens."""
        self.set_input(address, True)
        assert self.wait_reads(2), "the driver is not polling"
        self.set_input(address, False)
        assert self.wait_reads(2), "the driver is not polling"

    def wait_coil(self, coil: int, level: bool, timeout: float = 5.0) -> float:
        """The time a write set ``coil`` to ``level`` (waiting for it)."""
        def hit():
            return next((t for t, c, v in self.coil_log if c == coil and v == level), None)
        with self._cond:
            assert self._cond.wait_for(lambda: hit() is not None, timeout), \
                f"coil {coil} never set to {level}; writes: {self.coil_log}"
            return hit()
