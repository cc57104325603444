"""Options of a ``turnstile.serial`` driver, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.driver import DriverConfig


class TurnstileConfig(DriverConfig):
    codec: Literal["rs485-bus", "bcc-p2p"] = Field(description="The controllers' framing: rs485-bus (polled, "
                                                   "up to 32 on a bus) or bcc-p2p (one controller per port).")
    port: str = Field(description="Serial device, e.g. /dev/ttyUSB0 (a stable /dev/serial/by-id/ link is best).")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000, description="Serial line speed, bits/s.")
    addresses: list[int] = Field(default=[1], min_length=1, max_length=32,
                                 description="rs485-bus: the controllers' bus addresses (1..32).")
    poll_interval_s: float = Field(default=0.05, gt=0, le=60, description="rs485-bus: pause between polls of one device.")
    status_interval_s: float = Field(default=2.0, gt=0, le=600, description="bcc-p2p: status heartbeat period.")
    reply_timeout_s: float = Field(default=0.25, gt=0, le=30, description="Wait this long for a reply (plus the frame's own transmission time).")
    retries: int = Field(default=2, ge=0, le=10, description="Resends after a timeout before the device is reported offline.")
    offline_retry_s: float = Field(default=1.0, gt=0, le=600, description="How often an offline device is tried again.")
    reconnect_initial_s: float = Field(default=0.2, gt=0, le=60, description="First wait before reopening "
                                       "a lost port; it doubles with each failure up to reconnect_max_s.")
    reconnect_max_s: float = Field(default=10.0, gt=0, le=3600, description="Longest wait between two tries "
                                                                          "to reopen the port.")
    frame_gap_s: float = Field(default=0.05, gt=0, le=5, description="Line silence that ends a frame cut short.")
    command_queue_timeout_s: float = Field(default=2.0, gt=0, le=60, description="A command not started within this fails (not sent).")
    resync_timeout_s: float = Field(default=5.0, gt=0, le=120, description="Time to drain a device's queued events after it reappears.")
    flood_report_s: float = Field(default=60.0, ge=1, le=3600,
                                  description="A flapping tamper switch (more changes than one alarm each "
                                              "may) is reported once when it starts (an alarm), then with its "
                                              "count once per this many seconds, and as over after this many "
                                              "seconds without one; the state it left is alarmed.")
    state_file: Path | None = Field(default=None, description="Remember event numbers and counters across "
                                    "restarts (recommended, e.g. under state_dir): no repeated event, and "
                                    "passages while the edge was down are reported as a counter gap.")

    @model_validator(mode="after")
    def _check_addresses(self):
        bad = [a for a in self.addresses if not 1 <= a <= 32]
        if bad:
            raise ValueError(f"addresses {bad} out of range; bus addresses are 1..32")
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError("addresses must be unique")
        if self.codec == "bcc-p2p" and self.addresses != [1]:
            raise ValueError("bcc-p2p is point to point (one controller per port): leave `addresses` unset")
        return self
