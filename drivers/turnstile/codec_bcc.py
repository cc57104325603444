"""``bcc-p2p``: the point-to-point framing common on field controllers.

Frame (docs/protocols/bcc-p2p.md)::

    STX 0x02 | len lo hi | code | body[len-1] | BCC

``len`` counts code + body; BCC is the XOR of every preceding byte of the frame,
STX included. Replies to commands are single bytes: ACK 0x06, NAK 0x15; the
edge confirms each device event with a single ACK. Data replies (status,
counters) follow the ACK as frames; device events arrive unsolicited.

A length-prefixed frame with an 8-bit check cannot resync on byte values alone,
so when a candidate frame fails (bad BCC, bad length, unknown body) the decoder
rescans from the byte after its STX, and a frame still open when the line goes
quiet (``idle()``) is abandoned the same way: no intact frame is swallowed by
the garbage in front of it. Pure functions over bytes; no I/O.
"""

from __future__ import annotations

from drivers.turnstile import _payload
from drivers.turnstile import messages as m
from drivers.turnstile.messages import DecoderStats, Received

STX, ACK, NAK = 0x02, 0x06, 0x15
MAX_LEN = 1 + 32   # code + largest body
ADDRESS = 1        # a point-to-point line has one device; the driver calls it address 1


def _bcc(data: bytes) -> int:
    x = 0
    for b in data:
        x ^= b
    return x


def encode(message, address: int = ADDRESS) -> bytes:
    """The bytes for ``message``: a single ACK/NAK byte or one frame. ``address`` is ignored."""
    if isinstance(message, (m.Ack, m.EventAck)):
        return bytes((ACK,))
    if isinstance(message, m.Nak):
        return bytes((NAK,))
    if isinstance(message, m.Poll):
        raise ValueError("bcc-p2p has no poll: the device sends its events unsolicited")
    code, body = _payload.pack(message)
    head = bytes((STX,)) + (1 + len(body)).to_bytes(2, "little") + bytes((code,)) + body
    return head + bytes((_bcc(head),))


class Decoder:
    """Incremental decoder with rescan-on-failure; see the module docstring."""

    def __init__(self) -> None:
        self.stats = DecoderStats()
        self._buf = bytearray()  # unconsumed bytes; starts with STX when a frame is open

    def feed(self, data: bytes) -> list[Received]:
        self._buf += data
        return self._scan(final=False)

    def idle(self) -> list[Received]:
        """The line went quiet: an open frame will never complete; rescan what follows its STX."""
        return self._scan(final=True)

    def _scan(self, final: bool) -> list[Received]:
        out: list[Received] = []
        buf, i = self._buf, 0
        while i < len(buf):
            b = buf[i]
            if b != STX:
                if b == ACK or b == NAK:
                    out.append(Received(ADDRESS, m.Ack() if b == ACK else m.Nak()))
                else:
                    self.stats.garbage_bytes += 1
                i += 1
                continue
            result = self._try_frame(buf, i)
            if result is None:          # incomplete
                if not final:
                    break
                self.stats.malformed += 1
                i += 1                  # abandon this STX, rescan the rest
                continue
            size, message = result
            if message is None:         # a false start: rescan from the next byte
                i += 1
                continue
            out.append(Received(ADDRESS, message))
            i += size
        del buf[:i]
        return out

    def _try_frame(self, buf: bytearray, i: int):
        """(size, message) for a frame at ``i``; (0, None) when invalid; None when incomplete."""
        if len(buf) - i < 3:
            return None
        length = buf[i + 1] | buf[i + 2] << 8
        if not 1 <= length <= MAX_LEN:
            self.stats.malformed += 1
            return 0, None
        size = 3 + length + 1
        if len(buf) - i < size:
            return None
        frame = bytes(buf[i:i + size])
        if _bcc(frame[:-1]) != frame[-1]:
            self.stats.bad_checksum += 1
            return 0, None
        try:
            message = _payload.unpack(frame[3], frame[4:-1])
        except _payload.BodyError:
            self.stats.unknown += 1
            return 0, None
        self.stats.frames += 1
        return size, message
