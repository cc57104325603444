"""``rs485-bus``: our reference multi-drop protocol (the edge is the bus master).

Frame (docs/protocols/rs485-bus.md)::

    STX 0x02 | addr | code | len | body[len] | CRC-16/MODBUS lo hi | ETX 0x03

Between STX and ETX the bytes 0x02, 0x03 and 0x10 are sent as DLE 0x10
followed by the byte XOR 0x20, so a raw STX always starts a frame and a raw ETX
always ends one: after any garbage the decoder is back in step at the next STX.
Pure functions over bytes; no I/O.
"""

from __future__ import annotations

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


class Decoder:
    """Incremental decoder: feed any chunks, get every complete valid message back.

    Garbage, cut-short frames, bad escapes and bad CRCs are counted in ``stats``
    and skipped; they never delay the frames that follow.
    """

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf: bytearray | None = None  # None: hunting for STX
        self._escape = False

    def feed(self, data: bytes) -> list[Received]:
        out: list[Received] = []
        for b in data:
            if b == STX:
                if self._buf is not None:
                    self.stats.malformed += 1  # a frame cut short by the next one
                self._buf, self._escape = bytearray(), False
            elif self._buf is None:
                self.stats.garbage_bytes += 1
            elif b == ETX:
                msg = self._finish(bytes(self._buf))
                self._buf = None
                if msg is not None:
                    out.append(msg)
            elif self._escape:
                self._escape = False
                if b ^ 0x20 not in _ESCAPED:
                    self._abandon()
                else:
                    self._append(b ^ 0x20)
            elif b == DLE:
                self._escape = True
            else:
                self._append(b)
        return out

    def idle(self) -> list[Received]:
        """The line went quiet: a frame still open will never complete."""
        if self._buf is not None:
            self._abandon()
        return []

    def _append(self, b: int) -> None:
        self._buf.append(b)
        if len(self._buf) > _MAX_INNER:
            self._abandon()

    def _abandon(self) -> None:
        self.stats.malformed += 1
        self._buf, self._escape = None, False

    def _finish(self, inner: bytes) -> Received | None:
        if self._escape or len(inner) < 5 or inner[2] != len(inner) - 5:
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
