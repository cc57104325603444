"""``rs485-bus``: our reference multi-drop protocol (the edge is the bus master).

Frame (docs/protocols/rs485-bus.md)::

    STX 0x02 | addr | code | len | body[len] | CRC-16/MODBUS lo hi | ETX 0x03

Between STX and ETX the bytes 0x02, 0x03 and 0x10 are sent as DLE 0x10
followed by the byte XOR 0x20, so a raw STX always starts a frame and a raw ETX
always ends one: after any garbage the decoder is back in step at the next STX.
Pure functions over bytes; no I/O.
"""

from __future__ import annotations

import re

from drivers.turnstile import _payload
from drivers.turnstile.messages import DecoderStats, Received

STX, ETX, DLE = 0x02, 0x03, 0x10
_ESCAPED = frozenset((STX, ETX, DLE))
MAX_BODY = 32
MAX_ADDRESS = 32
# addr + code + len + body + crc, unstuffed
_MAX_INNER = 3 + MAX_BODY + 2


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF, no final XOR; check("123456789") = 0x4B37."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _stuff(inner: bytes) -> bytes:
    out = bytearray()
    for b in inner:
        if b in _ESCAPED:
            out += bytes((DLE, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def encode(message, address: int = 1) -> bytes:
    """One complete frame for ``message`` to or from bus ``address`` (1..32)."""
    if not 1 <= address <= MAX_ADDRESS:
        raise ValueError(f"bus address {address}; expected 1..{MAX_ADDRESS}")
    code, body = _payload.pack(message)
    inner = bytes((address, code, len(body))) + body
    crc = crc16_modbus(inner)
    return bytes((STX,)) + _stuff(inner + bytes((crc & 0xFF, crc >> 8))) + bytes((ETX,))


_CONTROL = re.compile(b"[\x02\x03]")
_UNESCAPE = {0x22: b"\x02", 0x23: b"\x03", 0x30: b"\x10"}
# the most raw bytes a valid frame can have between STX and ETX: every inner byte stuffed
_MAX_RAW = 2 * _MAX_INNER


class Decoder:
    """Incremental decoder: feed any chunks, get every complete valid message back.

    Garbage, cut-short frames, bad escapes and bad CRCs are counted in ``stats``
    and skipped; they never delay the frames that follow. Frames are cut at raw
    STX/ETX bytes (which stuffing keeps out of every frame) with bytes.find, and
    unstuffed per frame, so a noisy 115200 baud line costs little CPU.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._raw: bytearray | None = None  # stuffed bytes after an STX; None: hunting for STX

    def feed(self, data: bytes) -> list[Received]:
        out: list[Received] = []
        i, n = 0, len(data)
        while i < n:
            if self._raw is None:
                j = data.find(b"\x02", i)
                if j < 0:
                    self.stats.garbage_bytes += n - i
                    break
                self.stats.garbage_bytes += j - i
                self._raw, i = bytearray(), j + 1
                continue
            hit = _CONTROL.search(data, i)
            end = hit.start() if hit else n
            self._raw += data[i:end]
            if len(self._raw) > _MAX_RAW:
                self._abandon()           # far too long: hunt again, from the byte that ended it
                i = end
                continue
            if hit is None:
                break                     # the frame continues in the next chunk
            if data[end] == STX:
                self.stats.malformed += 1  # a frame cut short by the next one
                self._raw = bytearray()
            else:
                msg = self._finish(bytes(self._raw))
                self._raw = None
                if msg is not None:
                    out.append(msg)
            i = end + 1
        return out

    def idle(self) -> list[Received]:
        """The line went quiet: a frame still open will never complete."""
        if self._raw is not None:
            self._abandon()
        return []

    def _abandon(self) -> None:
        self.stats.malformed += 1
        self._raw = None

    def _finish(self, raw: bytes) -> Received | None:
        inner = _unstuff(raw)
        if inner is None or len(inner) < 5 or inner[2] != len(inner) - 5:
            self.stats.malformed += 1
            return None
        if crc16_modbus(inner[:-2]) != inner[-2] | inner[-1] << 8:
            self.stats.bad_checksum += 1
            return None
        address = inner[0]
        try:
            message = _payload.unpack(inner[1], inner[3:-2])
        except _payload.BodyError:
            self.stats.unknown += 1
            return None
        if not 1 <= address <= MAX_ADDRESS:
            self.stats.unknown += 1
            return None
        self.stats.frames += 1
        return Received(address, message)


def _unstuff(raw: bytes) -> bytes | None:
    """The frame's bytes without DLE stuffing; None for a DLE not followed by 0x22/0x23/0x30."""
    if DLE not in raw:
        return raw
    first, *rest = raw.split(b"\x10")
    out = bytearray(first)
    for part in rest:
        if not part or part[0] not in _UNESCAPE:
            return None
        out += _UNESCAPE[part[0]]
        out += part[1:]
    return bytes(out)
