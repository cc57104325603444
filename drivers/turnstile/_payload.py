"""The application layer both of our codecs carry: one code byte and a fixed-size body per message.

Framing (STX, addresses, lengths, checksums, stuffing) is each codec's own
business; what a grant or a device event looks like inside a frame is shared,
so a message has one byte layout and one test. Multi-byte integers are
little-endian. The tables are documented in docs/protocols/.
"""

from __future__ import annotations

import struct

from drivers.turnstile import messages as m

# Request codes (edge -> controller). Codes avoid 0x02/0x03/0x06/0x10/0x15 so a body byte
# is never mistaken for a control byte by someone reading a line trace.
POLL, GET_STATUS = 0x21, 0x22
GRANT, DENY, LOCK, UNLOCK, LOCKDOWN, RELEASE, SET_TIME, READ_COUNTERS = range(0x30, 0x38)
# Reply codes (controller -> edge).
ACK, NAK, STATUS, COUNTERS, EVENT = 0x41, 0x42, 0x50, 0x51, 0x60

_DIR = {None: 0, "in": 1, "out": 2}
_DIR_BACK = {v: k for k, v in _DIR.items()}

_EMPTY = {GET_STATUS: m.GetStatus, DENY: m.Deny, LOCK: m.Lock, UNLOCK: m.Unlock,
          LOCKDOWN: m.Lockdown, RELEASE: m.Release, READ_COUNTERS: m.ReadCounters}
_EMPTY_CODE = {cls: code for code, cls in _EMPTY.items()}
_EVENT = struct.Struct("<HBBBII")   # seq, kind, direction, arg, counter, device_time
_COUNTERS = struct.Struct("<II")


class BodyError(ValueError):
    """A code or body this layer does not know (the frame itself was fine)."""


def request_code(msg) -> int:
    """The wire code of a request, echoed in the bus codec's ACK/NAK."""
    return pack(msg)[0]


def pack(msg) -> tuple[int, bytes]:
    """``(code, body)`` of a message; ValueError when a field is out of its wire range."""
    cls = type(msg)
    if cls in _EMPTY_CODE:
        return _EMPTY_CODE[cls], b""
    try:
        return _PACKERS[cls](msg)
    except KeyError:
        raise ValueError(f"{cls.__name__} has no body in this layer") from None
    except struct.error as exc:
        raise ValueError(f"{msg!r}: field out of range: {exc}") from None


def unpack(code: int, body: bytes):
    """The message of a ``(code, body)``; BodyError when unknown or the body size is wrong."""
    if code in _EMPTY:
        if body:
            raise BodyError(f"code 0x{code:02x} takes no body, got {len(body)} bytes")
        return _EMPTY[code]()
    try:
        unpacker, size = _UNPACKERS[code]
    except KeyError:
        raise BodyError(f"unknown code 0x{code:02x}") from None
    if len(body) != size:
        raise BodyError(f"code 0x{code:02x} takes {size} body bytes, got {len(body)}")
    try:
        return unpacker(body)
    except (ValueError, KeyError) as exc:
        raise BodyError(f"code 0x{code:02x}: bad body: {exc}") from None


def _dir(value) -> int:
    if value not in _DIR:
        raise ValueError(f"direction {value!r}; expected 'in' or 'out'")
    return _DIR[value]


def _pack_grant(g: m.Grant):
    if g.direction not in ("in", "out"):
        raise ValueError(f"grant direction {g.direction!r}; expected 'in' or 'out'")
    return GRANT, struct.pack("<BBB", _dir(g.direction), g.passes, g.timeout_s)


def _unpack_grant(b: bytes) -> m.Grant:
    d, passes, timeout = struct.unpack("<BBB", b)
    if d not in (1, 2):
        raise ValueError(f"direction code {d}")
    return m.Grant(_DIR_BACK[d], passes, timeout)


def _pack_nak(n: m.Nak):
    return NAK, struct.pack("<BB", n.code or 0, int(n.reason or 0))


def _unpack_status(b: bytes) -> m.Status:
    mode, flags, queued = struct.unpack("<BBB", b)
    return m.Status(m.Mode(mode), bool(flags & 1), bool(flags & 2), bool(flags & 4),
                    bool(flags & 8), queued)


def _pack_status(s: m.Status):
    flags = s.emergency | s.tamper << 1 | s.held_open << 2 | s.fault << 3
    return STATUS, struct.pack("<BBB", int(s.mode), flags, s.queued)


def _pack_event(e: m.DeviceEvent):
    return EVENT, _EVENT.pack(e.seq, int(e.kind), _dir(e.direction), e.arg, e.counter, e.device_time)


def _unpack_event(b: bytes) -> m.DeviceEvent:
    seq, kind, d, arg, counter, t = _EVENT.unpack(b)
    return m.DeviceEvent(seq, m.EventKind(kind), _DIR_BACK[d], arg, counter, t)


_PACKERS = {
    m.Poll: lambda p: (POLL, struct.pack("<H", p.ack_seq)),
    m.Grant: _pack_grant,
    m.SetTime: lambda t: (SET_TIME, struct.pack("<I", t.epoch)),
    m.Ack: lambda a: (ACK, struct.pack("<B", a.code or 0)),
    m.Nak: _pack_nak,
    m.Status: _pack_status,
    m.Counters: lambda c: (COUNTERS, _COUNTERS.pack(c.inbound, c.outbound)),
    m.DeviceEvent: _pack_event,
}
_UNPACKERS = {
    POLL: (lambda b: m.Poll(struct.unpack("<H", b)[0]), 2),
    GRANT: (_unpack_grant, 3),
    SET_TIME: (lambda b: m.SetTime(struct.unpack("<I", b)[0]), 4),
    ACK: (lambda b: m.Ack(b[0]), 1),
    NAK: (lambda b: m.Nak(b[0], m.NakReason(b[1])), 2),
    STATUS: (_unpack_status, 3),
    COUNTERS: (lambda b: m.Counters(*_COUNTERS.unpack(b)), 8),
    EVENT: (_unpack_event, _EVENT.size),
}
