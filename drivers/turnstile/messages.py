"""The turnstile message vocabulary shared by every codec.

A codec turns these into bytes and back; the driver never sees bytes. Requests
go from the edge to the controller, replies and device events come back.
Values are plain Python (directions are "in"/"out"), so property tests and the
simulators build them without knowing any wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

DIRECTIONS = ("in", "out")


class Mode(IntEnum):
    """The controller's operating mode, as reported in a status reply."""

    LOCKED = 0     # normal: closed, opens on a grant
    FREE = 1       # unlocked: free passage both ways
    LOCKDOWN = 2   # closed, grants refused until released


class EventKind(IntEnum):
    """What a device event reports (the wire code of each kind)."""

    PASSAGE = 1
    GRANT_TIMEOUT = 2
    FORCED = 3
    TAILGATE = 4
    WRONG_WAY = 5
    HELD_OPEN = 6
    TAMPER = 7
    EMERGENCY = 8
    FAULT = 9


class NakReason(IntEnum):
    """Why a controller refused a request."""

    UNSPECIFIED = 0
    BUSY = 1
    INVALID = 2
    EMERGENCY_ACTIVE = 3
    LOCKDOWN_ACTIVE = 4
    UNSUPPORTED = 5


# --- requests (edge -> controller) -------------------------------------------------------

@dataclass(frozen=True)
class Poll:
    """Bus master's poll: 'send your oldest queued event'; acknowledges events up to ack_seq."""

    ack_seq: int = 0


@dataclass(frozen=True)
class GetStatus:
    """Ask for the controller's mode and flags."""


@dataclass(frozen=True)
class Grant:
    """Open for ``passes`` passages in ``direction`` for at most ``timeout_s`` seconds."""

    direction: str = "in"
    passes: int = 1
    timeout_s: int = 10


@dataclass(frozen=True)
class Deny:
    """Cancel a pending grant and signal 'refused' on the lane display."""


@dataclass(frozen=True)
class Lock:
    """Back to normal controlled mode (closed, opens on a grant)."""


@dataclass(frozen=True)
class Unlock:
    """Free mode: passage both ways without a grant."""


@dataclass(frozen=True)
class Lockdown:
    """Closed, and grants are refused until a release."""


@dataclass(frozen=True)
class Release:
    """Leave lockdown, back to normal controlled mode."""


@dataclass(frozen=True)
class SetTime:
    """Set the controller's clock (UTC seconds since the epoch)."""

    epoch: int = 0


@dataclass(frozen=True)
class ReadCounters:
    """Ask for the controller's passage counters."""


@dataclass(frozen=True)
class EventAck:
    """Point-to-point: the edge confirms the device event it just received."""


# --- replies and device events (controller -> edge) --------------------------------------

@dataclass(frozen=True)
class Ack:
    """The request was accepted. ``code`` echoes the request's wire code where the codec carries it."""

    code: int | None = None


@dataclass(frozen=True)
class Nak:
    """The request was refused (``reason`` where the codec carries one)."""

    code: int | None = None
    reason: NakReason | None = None


@dataclass(frozen=True)
class Status:
    mode: Mode = Mode.LOCKED
    emergency: bool = False
    tamper: bool = False
    held_open: bool = False
    fault: bool = False
    queued: int = 0  # device events waiting to be delivered


@dataclass(frozen=True)
class Counters:
    inbound: int = 0
    outbound: int = 0


@dataclass(frozen=True)
class DeviceEvent:
    """Something the controller saw. ``counter`` is the passage counter of ``direction`` after it."""

    seq: int
    kind: EventKind
    direction: str | None = None
    arg: int = 0          # tamper/emergency: 1 active, 0 cleared; fault: the fault code
    counter: int = 0
    device_time: int = 0  # controller clock, UTC epoch seconds


REQUESTS = (Poll, GetStatus, Grant, Deny, Lock, Unlock, Lockdown, Release, SetTime, ReadCounters,
            EventAck)
REPLIES = (Ack, Nak, Status, Counters, DeviceEvent)


@dataclass(frozen=True)
class Received:
    """One decoded message and the bus address it came from (1 on a point-to-point line)."""

    address: int
    message: object


@dataclass
class DecoderStats:
    """What a decoder threw away, so a noisy line shows up in health and `edge status`."""

    frames: int = 0
    garbage_bytes: int = 0    # bytes outside any frame
    bad_checksum: int = 0     # complete frames whose CRC/BCC did not match
    malformed: int = 0        # bad length, bad escape, oversize, cut short
    unknown: int = 0          # checksum fine, but a code or body this codec does not know

    def as_dict(self) -> dict:
        return {"frames": self.frames, "garbage_bytes": self.garbage_bytes,
                "bad_checksum": self.bad_checksum, "malformed": self.malformed, "unknown": self.unknown}
