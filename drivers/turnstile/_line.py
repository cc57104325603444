"""The serial port as the driver loop sees it: open, write, read-with-wakeup, close.

Only the driver's run thread touches the port, so no lock is ever held around a
blocking read; other threads hand work over a queue and call ``wake()``, which
makes a pending ``read`` return at once. pyserial's and the OS's errors become
``LineLost`` here, at the boundary.
"""

from __future__ import annotations

import os
import select

import serial

from edge.errors import DriverError


class LineLost(DriverError):
    """The serial port could not be opened, or went away (adapter unplugged, pty closed)."""


class Line:
    def __init__(self, port: str, baudrate: int):
        self.port, self.baudrate = port, baudrate
        self._serial: serial.Serial | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        try:
            # exclusive: a second process on the same port would steal our bytes; fail loudly instead
            ser = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=2, exclusive=True)
            ser.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineLost(f"cannot open {self.port}: {exc}") from None
        self._serial = ser

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except (serial.SerialException, OSError):
                pass  # already gone; nothing left to release

    def write(self, data: bytes) -> None:
        ser = self._require()
        try:
            ser.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LineLost(f"write to {self.port} failed: {exc}") from None

    def read(self, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout``; b'' on timeout or when woken."""
        ser = self._require()
        try:
            ready, _, _ = select.select([ser.fileno(), self._wake_r], [], [], max(0.0, timeout))
            if self._wake_r in ready:
                self._drain_wake()
            if ser.fileno() in ready:
                return ser.read(4096)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LineLost(f"read from {self.port} failed: {exc}") from None
        return b""

    def wake(self) -> None:
        """Make a blocked ``read`` return now (called from other threads)."""
        try:
            os.write(self._wake_w, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: a wake-up is already pending

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _require(self) -> serial.Serial:
        if self._serial is None:
            raise LineLost(f"{self.port} is not open")
        return self._serial

    def dispose(self) -> None:
        self.close()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
