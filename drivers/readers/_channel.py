"""The serial line as libosdp sees it: non-blocking read and write, errors kept for the driver loop.

libosdp calls these from its own refresh thread and cannot take an exception,
so a lost port (adapter unplugged, pty closed) is remembered in ``error`` and
the driver loop tears the controller down and reconnects.
"""

from __future__ import annotations

import osdp
import serial

from edge.errors import DriverError


class PortUnavailable(DriverError):
    """The reader's serial port could not be opened, or went away."""


class SerialChannel(osdp.Channel):
    def __init__(self, port: str, baudrate: int):
        super().__init__()
        self.port = port
        self.error: str | None = None
        try:
            # exclusive: a second process on the same bus would steal the reader's answers
            self._serial = serial.Serial(port, baudrate, timeout=0, write_timeout=1, exclusive=True)
            self._serial.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortUnavailable(f"cannot open {port}: {exc}") from None

    def read(self, max_bytes: int) -> bytes:
        if self.error:
            return b""
        try:
            return self._serial.read(max_bytes)
        except (serial.SerialException, OSError, TypeError) as exc:
            self.error = f"read from {self.port} failed: {exc}"
            return b""

    def write(self, buf: bytes) -> int:
        if self.error:
            return 0
        try:
            return self._serial.write(buf) or 0
        except (serial.SerialException, OSError, TypeError) as exc:
            self.error = f"write to {self.port} failed: {exc}"
            return 0

    def flush(self) -> None:
        pass  # a pty/UART write has left our buffer when write() returns; nothing to push

    def close(self) -> None:
        try:
            self._serial.close()
        except (serial.SerialException, OSError):
            pass
