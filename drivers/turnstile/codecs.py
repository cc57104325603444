"""The codec seam: what the driver loop needs from a vendor protocol, and the known codecs.

A new vendor protocol is one module with ``encode(message, address)`` and a
``Decoder`` (``feed(bytes)``, ``idle()``, ``stats``), plus one entry below.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from drivers.turnstile import codec_bcc, codec_rs485
from drivers.turnstile.messages import DecoderStats, Received


class Decoder(Protocol):
    stats: DecoderStats

    def feed(self, data: bytes) -> list[Received]: ...
    def idle(self) -> list[Received]: ...


@dataclass(frozen=True)
class Codec:
    """One wire protocol as the driver sees it."""

    name: str
    module: ModuleType
    #: True: a bus master polls each address for its events (the device never speaks first).
    #: False: the device sends events unsolicited and the edge confirms each with EventAck.
    polled: bool
    #: Data replies come after a separate ACK (bcc) rather than standing for the ACK (bus).
    ack_before_data: bool
    max_frame_bytes: int

    def encode(self, message, address: int = 1) -> bytes:
        return self.module.encode(message, address)

    def decoder(self) -> Decoder:
        return self.module.Decoder()


CODECS: dict[str, Codec] = {
    # worst case: every inner byte stuffed, plus STX/ETX
    "rs485-bus": Codec("rs485-bus", codec_rs485, polled=True, ack_before_data=False,
                       max_frame_bytes=2 + 2 * (5 + codec_rs485.MAX_BODY)),
    "bcc-p2p": Codec("bcc-p2p", codec_bcc, polled=False, ack_before_data=True,
                     max_frame_bytes=4 + codec_bcc.MAX_LEN),
}


def get_codec(name: str) -> Codec:
    try:
        return CODECS[name]
    except KeyError:
        raise ValueError(f"unknown turnstile codec {name!r}; expected one of: {', '.join(CODECS)}") from None
