"""A hostile OSDP reader for attack tests: it speaks OSDP in clear and never offers a secure channel.

libosdp's own PD always offers the secure channel, so it cannot play a reader that
downgrades; this one is written from the OSDP framing (SOM, address, length, control,
reply, CRC-16) and answers the controller's ID and CAP queries, claims no
communication security, refuses CHLNG with a NAK, and hands out queued card reads
and key presses at the next POLL.
"""

from __future__ import annotations

import os
import threading

from drivers.sim._pty import PtyLine

SOM, ACK, NAK, PDID, PDCAP, RAW, KEYPAD = 0x53, 0x40, 0x41, 0x45, 0x46, 0x50, 0x53
CMD_POLL, CMD_ID, CMD_CAP, CMD_CHLNG = 0x60, 0x61, 0x62, 0x76
# function code, compliance, count: card data format, LED, buzzer, receive buffer; no 9 (security)
CAPS = bytes([3, 1, 1, 4, 1, 1, 5, 1, 1, 10, 0x80, 0, 11, 0x80, 0])


def crc16(data: bytes) -> int:
    """OSDP's CRC-16 (CCITT polynomial, initial value 0x1D0F)."""
    crc = 0x1D0F
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


class PlaintextReader:
    """A reader at ``address`` on a pty at ``path`` that only ever talks in clear."""

    def __init__(self, path, address: int):
        self.line = PtyLine(path)
        self.address = address
        self.commands_seen: list[int] = []
        self._pending: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> PlaintextReader:
        self.line.open()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.line.close()

    def card(self, data: bytes, bits: int) -> None:
        """A Wiegand card read, handed out at the next POLL."""
        with self._lock:
            self._pending.append((RAW, bytes([0, 1, bits & 0xFF, bits >> 8]) + data))

    def keys(self, typed: bytes) -> None:
        with self._lock:
            self._pending.append((KEYPAD, bytes([0, len(typed)]) + typed))

    def _frame(self, seq: int, code: int, data: bytes = b"") -> bytes:
        length = 5 + 1 + len(data) + 2
        body = bytes([SOM, self.address | 0x80, length & 0xFF, length >> 8, (seq & 3) | 0x04, code]) + data
        crc = crc16(body)
        return body + bytes([crc & 0xFF, crc >> 8])

    def _reply(self, seq: int, cmd: int) -> bytes:
        if cmd == CMD_ID:
            return self._frame(seq, PDID, bytes(12))
        if cmd == CMD_CAP:
            return self._frame(seq, PDCAP, CAPS)
        if cmd == CMD_CHLNG:
            return self._frame(seq, NAK, bytes([0x05]))  # "security conditions not met": no secure channel
        with self._lock:
            pending = self._pending.pop(0) if cmd == CMD_POLL and self._pending else None
        return self._frame(seq, *pending) if pending else self._frame(seq, ACK)

    def _loop(self) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                buf += os.read(self.line.master, 512)
            except (BlockingIOError, OSError, TypeError):
                self._stop.wait(0.002)
                continue
            while (packet := self._next_packet(buf)) is not None:
                buf, frame = packet
                if frame is not None:
                    os.write(self.line.master, frame)

    def _next_packet(self, buf: bytes) -> tuple[bytes, bytes | None] | None:
        """(rest of the buffer, our reply or None) for the first whole packet; None when none is whole."""
        start = buf.find(bytes([SOM]))
        if start < 0 or len(buf) - start < 6:
            return None
        buf = buf[start:]
        length = buf[2] | buf[3] << 8
        if length < 7 or len(buf) < length:
            return (buf[1:], None) if length < 7 else None
        packet, rest = buf[:length], buf[length:]
        if packet[1] & 0x7F != self.address:
            return rest, None
        ctrl = packet[4]
        offset = 5 + (packet[5] if ctrl & 0x08 else 0)
        cmd = packet[offset]
        self.commands_seen.append(cmd)
        return rest, self._reply(ctrl & 3, cmd)
