"""Payloads of the ``reader.*`` events (OSDP readers), as central receives them.

A PIN never appears in an event or a log: ``reader.pin_entered`` says that one
was typed, and the gate asks the driver to check it (``check_pin``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: int = Field(ge=0, le=126, description="The reader's OSDP address.")


class ReaderCard(_Payload):
    """reader.card: a card was read; ``credential`` is what the directory knows it by."""

    reader_no: int = Field(ge=0, le=255)
    format: Literal["h10301", "raw", "ascii"]
    bits: int = Field(ge=0)
    credential: str | None = Field(description="None when the read is unusable (see `problem`).")
    problem: str | None = None


class ReaderPinEntered(_Payload):
    """reader.pin_entered: a PIN was typed (held in the driver's memory only, for `check_pin`)."""

    reader_no: int = Field(ge=0, le=255)
    digits: int = Field(ge=0)


class ReaderTamper(_Payload):
    """reader.tamper (alarm): the reader's case or mounting switch opened (active) or closed again."""

    active: bool


class ReaderPower(_Payload):
    """reader.power (alarm): the reader reports a power failure (failed) or its return."""

    failed: bool


class ReaderOnline(_Payload):
    """reader.online: the reader answers (with the secure channel up, unless plaintext is allowed)."""

    secure: bool


class ReaderOffline(_Payload):
    """reader.offline (alarm): the reader stopped answering, or its serial port is gone (a cut cable?)."""

    reason: str


class ReaderSecureChannelFailed(_Payload):
    """reader.secure_channel_failed (alarm): the reader does not hold our key (wrong key, or a swapped reader)."""

    detail: str


class ReaderFlood(_Payload):
    """reader.flood: card reads over the reader's limit (``rate``, ``burst``) were refused, or
    (``what`` status_changes) tamper/power changes, or (link_changes) the reader going offline
    and online again or its secure channel dropping, came faster than one alarm each may.

    ``started`` (alarm) at the first refused read; ``continuing`` (normal) with the reads
    refused in each ``flood_report_s`` while it lasts; ``ended`` (normal) after a whole
    ``flood_report_s`` without one, with the total. One alarm per flood, not one per read.
    Changes over the limit are still the reader's state (its health); the state they leave
    is a reader.tamper / reader.power / reader.offline (or online) / secure_channel_failed event
    at the flood's next report if it is not the one reported last.
    """

    what: Literal["card_reads", "status_changes", "link_changes"] = Field(
        default="card_reads", description="card_reads: reads refused; status_changes: tamper/power changes "
                                          "not alarmed one by one; link_changes: reader.offline / online "
                                          "and secure channel drops not reported one by one.")
    state: Literal["started", "continuing", "ended"]
    suppressed: int = Field(ge=0, description="Reads refused (or changes not alarmed) since this flood's "
                                              "previous reader.flood event.")
    total: int = Field(ge=1, description="Reads refused (or changes not alarmed) since the flood started.")
    duration_s: float = Field(ge=0, description="Since the first refused read (ended: to the last).")
    rate: float = Field(gt=0, description="The limit in force: card reads (or changes) a second, sustained.")
    burst: int = Field(ge=1, description="The limit in force: card reads (or changes) at once.")
    detail: str


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {
    "reader.card": ReaderCard,
    "reader.pin_entered": ReaderPinEntered,
    "reader.tamper": ReaderTamper,
    "reader.power": ReaderPower,
    "reader.online": ReaderOnline,
    "reader.offline": ReaderOffline,
    "reader.secure_channel_failed": ReaderSecureChannelFailed,
    "reader.flood": ReaderFlood,
}
