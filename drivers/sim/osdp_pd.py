"""A reader at the far end of a pty, played by libosdp's own peripheral-device (PD) code.

Not our simulator: the secure channel, framing and replies are libosdp's PD
implementation, so a test against it checks our controller against a second,
independent implementation of OSDP. The pty's slave end is reachable at
``path`` (see ``_pty.PtyLine``), like a USB RS-485 adapter.
"""

from __future__ import annotations

import os
import queue
import threading

import osdp

from drivers.readers._ticking import TickingRefresh
from drivers.readers.cards import encode_h10301
from drivers.sim._pty import PtyLine


class _MasterChannel(osdp.Channel):
    def __init__(self, line: PtyLine):
        super().__init__()
        self.line = line

    def read(self, max_bytes: int) -> bytes:
        fd = self.line.master
        if fd is None:
            return b""
        try:
            return os.read(fd, max_bytes)
        except (BlockingIOError, OSError):
            return b""

    def write(self, buf: bytes) -> int:
        fd = self.line.master
        if fd is None:
            return len(buf)  # unplugged: the bytes go nowhere, as on a cut cable
        try:
            return os.write(fd, buf)
        except (BlockingIOError, OSError):
            return 0

    def flush(self) -> None:
        pass


class _PeripheralDevice(TickingRefresh, osdp.PeripheralDevice):
    """libosdp's PD, its refresh thread ticking every ``refresh_s``."""


class OsdpReaderSim:
    """libosdp PD with a keypad, LED, buzzer and tamper switch; ``commands`` gets what the CP sent."""

    def __init__(self, path, address: int = 0, key: bytes | None = None, install_mode: bool = False,
                 refresh_s: float = 0.02):
        """``refresh_s``: how often libosdp's PD code services the line (the binding's own loop: 20 ms);
        a reader's firmware answers within a few ms, so a lane test may set ~0.002."""
        self.line = PtyLine(path)
        self.address = address
        self.commands: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        caps = osdp.PDCapabilities([
            (osdp.Capability.LEDControl, 1, 1), (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CardDataFormat, 1, 1), (osdp.Capability.ContactStatusMonitoring, 1, 1),
            (osdp.Capability.CommunicationSecurity, 1, 1),
        ])
        flags = [osdp.LibFlag.InstallMode] if install_mode else []
        self.line.open()
        info = osdp.PDInfo(address, _MasterChannel(self.line), scbk=key, flags=flags)
        self.pd = _PeripheralDevice(info, caps, log_level=osdp.LogLevel.Emergency,
                                    command_handler=self._command, refresh_s=refresh_s)

    def _command(self, cmd: dict) -> tuple[int, dict | None]:
        self.commands.put(cmd)
        return 0, None

    def start(self) -> OsdpReaderSim:
        self.pd.start()
        return self

    def stop(self) -> None:
        self.pd.stop()
        self.line.close()

    def unplug(self) -> None:
        self.line.close()

    def replug(self) -> None:
        """The adapter (or the cable to it) back in: a new port at the same path, the same reader."""
        self.line.open()

    @property
    def secure(self) -> bool:
        return bool(self.pd.is_sc_active())

    def card(self, facility: int, number: int, reader_no: int = 0) -> None:
        """Present an H10301 card."""
        self.pd.submit_event({"event": osdp.Event.CardRead, "reader_no": reader_no, "direction": 0,
                              "format": osdp.CardFormat.Wiegand, "length": 26,
                              "data": encode_h10301(facility, number)})

    def raw_card(self, data: bytes, bits: int) -> None:
        self.pd.submit_event({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                              "format": osdp.CardFormat.Wiegand, "length": bits, "data": data})

    def code(self, text: str) -> None:
        """A QR code or barcode: the reader sends its characters as raw, unspecified-format bits."""
        data = text.encode("ascii")
        self.pd.submit_event({"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0,
                              "format": osdp.CardFormat.Unspecified, "length": len(data) * 8, "data": data})

    def keys(self, typed: str) -> None:
        self.pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0, "data": typed.encode()})

    def local_status(self, tamper: bool, power_failed: bool = False) -> None:
        self.pd.submit_event({"event": osdp.Event.Status, "type": osdp.StatusReportType.Local,
                              "nr_entries": 2, "report": bytes([int(tamper), int(power_failed)])})
