"""Options of a ``reader.osdp`` driver, validated at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from edge.driver import DriverConfig


class OsdpReaderConfig(DriverConfig):
    port: str = Field(description="Serial device of the RS-485 adapter, e.g. /dev/serial/by-id/...")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000, description="Serial line speed, bits/s.")
    address: int = Field(default=0, ge=0, le=126, description="The reader's OSDP address on the bus.")
    key_file: Path | None = Field(default=None, description="The reader's own secure-channel base key "
                                  "(SCBK): 32 hex digits, file readable by the edge user only.")
    allow_plaintext: bool = Field(default=False, description="DANGEROUS: talk to the reader without a "
                                  "secure channel (card numbers readable and forgeable on the cable).")
    install_mode: bool = Field(default=False, description="DANGEROUS outside the install visit: give `key_file`'s key to a reader still on its "
                               "install (default) key, over a channel secured with that default key. "
                               "Set it for the install visit only, then remove it.")
    raw_as_text: bool = Field(default=False, description="A QR/barcode reader: its unspecified-format reads "
                              "are a code's characters (a booking reference), taken as text.")
    pin_terminator: str = Field(default="#", min_length=1, max_length=1,
                                description="The key that ends a PIN (the Enter key always does).")
    pin_max_digits: int = Field(default=12, ge=4, le=32, description="Digits kept at most; more are ignored.")
    pin_timeout_s: float = Field(default=10.0, gt=0, le=120,
                                 description="Keys typed more than this apart start a new PIN.")
    pin_ttl_s: float = Field(default=30.0, gt=0, le=300,
                             description="An entered PIN not checked within this is forgotten.")
    command_timeout_s: float = Field(default=2.0, gt=0, le=30,
                                     description="A reader command (LED, buzzer) not confirmed within this fails.")
    refresh_interval_s: float = Field(default=0.005, ge=0.001, le=0.05,
                                      description="How often the OSDP stack is serviced (frames sent, replies read). "
                                                  "Every exchange waits for these ticks: at 20 ms (the binding's own "
                                                  "loop) polls run at ~10/s instead of libosdp's 20/s and an LED + "
                                                  "buzzer takes ~120 ms; at 5 ms ~16/s and ~40 ms. At most 50 ms "
                                                  "(libosdp's limit).")
    offline_retry_s: float = Field(default=2.0, gt=0, le=600,
                                   description="A reader offline this long is contacted afresh (new secure "
                                               "channel); libosdp alone would wait minutes.")
    reconnect_initial_s: float = Field(default=0.2, gt=0, le=60, description="First wait before reopening "
                                       "a lost port; it doubles with each failure up to reconnect_max_s.")
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600, description="Longest wait between two tries "
                                                                          "to reopen the port.")

    # Card-read flood limit (drivers.NAME.rate and .burst may be changed by central's signed config).
    # A person presents a card every second or two, a queue about one every 2 s per lane, and
    # people tap twice: 5 at once, then 1 a second, stops nobody and caps a reader replaying
    # reads at its polling rate (~16/s with its cards and alarms) to 1 a second.
    # The floor keeps a lane usable whoever sets it: central's signed config (one config key)
    # could otherwise set 1e-9 and shut every card lane of a site, alarmed only as a flood.
    rate: float = Field(default=1.0, ge=0.2, le=20,
                        description="Card reads a second this reader may present, sustained; a read over the "
                                    "limit is refused (never a credential: no decision, no grant) and counted "
                                    "in a reader.flood event. Between 0.2 (a card every 5 s: no setting, "
                                    "local or central's, can shut a lane) and 20 (faster than a reader is "
                                    "polled).")
    burst: int = Field(default=5, ge=1, le=60,
                       description="Card reads this reader may present at once before `rate` applies "
                                   "(a person tapping twice, a short queue).")
    flood_report_s: float = Field(default=60.0, ge=1, le=3600,
                                  description="A flood of refused reads is reported once when it starts (an "
                                              "alarm), then with its count once per this many seconds, and "
                                              "as over after this many seconds without a refusal.")

    @model_validator(mode="after")
    def _keyed(self):
        if self.key_file is None and not self.allow_plaintext:
            raise ValueError("key_file is required: the reader's secure-channel key "
                             "(or, knowingly, allow_plaintext = true)")
        if self.install_mode and self.key_file is None:
            raise ValueError("install_mode gives the reader key_file's key: set key_file")
        return self


def read_key(path: Path) -> bytes:
    """The 16-byte SCBK from ``path``; ValueError saying what is wrong with the file."""
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ValueError(f"{path}: the reader key must not be readable by group or others "
                         f"(mode {oct(mode & 0o777)}; chmod 600)")
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: expected 32 hex digits (a 16-byte key)") from None
    if len(key) != 16:
        raise ValueError(f"{path}: expected a 16-byte key (32 hex digits), got {len(key)} bytes")
    return key
