"""Options of a ``turnstile.modbus`` driver (a turnstile wired to a Modbus relay/input module)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge.driver import DriverConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Coils(_Strict):
    """Relay outputs (coil addresses, 0-based as on the wire) that release the turnstile one way."""

    release_in: int = Field(ge=0, le=65535, description="Coil that releases the turnstile inward.")
    release_out: int = Field(ge=0, le=65535, description="Coil that releases the turnstile outward.")


class Inputs(_Strict):
    """Discrete inputs (0-based addresses); leave one unset when the module has no such contact."""

    passage_in: int = Field(ge=0, le=65535, description="Pulses once per person through, inward.")
    passage_out: int = Field(ge=0, le=65535, description="Pulses once per person through, outward.")
    forced: int | None = Field(default=None, ge=0, le=65535, description="Door/arm forced contact.")
    tamper: int | None = Field(default=None, ge=0, le=65535, description="Housing tamper switch.")
    fire_alarm: int | None = Field(default=None, ge=0, le=65535,
                                   description="Fire-alarm release (the hardware frees the lane).")

    def used(self) -> dict[str, int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ModbusLink(DriverConfig):
    """Where the Modbus module is and how it is polled (shared by the relay-I/O driver kinds)."""

    transport: Literal["tcp", "rtu"] = Field(default="tcp", description="tcp: Modbus TCP to `host`; "
                                             "rtu: Modbus RTU on `serial_port`.")
    host: str | None = Field(default=None, description="tcp: the module's address.")
    tcp_port: int = Field(default=502, ge=1, le=65535, description="tcp: the module's TCP port.")
    serial_port: str | None = Field(default=None, description="rtu: serial device of the RS-485 adapter.")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000, description="rtu: serial line speed, bits/s.")
    unit: int = Field(default=1, ge=0, le=247, description="The module's Modbus device id.")
    address: int = Field(default=1, ge=1, le=32, description="The lane's address in turnstile.* events.")
    poll_interval_s: float = Field(default=0.05, ge=0.01, le=1.0,
                                   description="Inputs are read this often (bounded: a passage pulse "
                                               "is at least ~100 ms on such modules).")
    reply_timeout_s: float = Field(default=0.3, gt=0, le=5, description="Wait this long for the module's reply.")
    retries: int = Field(default=1, ge=0, le=5, description="Failed reads in a row before the module is "
                                                           "reported faulty and the lane out of service.")
    reconnect_initial_s: float = Field(default=0.2, gt=0, le=60, description="First wait before reconnecting "
                                       "to a silent module; it doubles up to reconnect_max_s.")
    reconnect_max_s: float = Field(default=5.0, gt=0, le=600, description="Longest wait between two "
                                                                        "reconnects.")
    command_timeout_s: float = Field(default=2.0, gt=0, le=30, description="A command (a release) not done "
                                                                         "within this fails.")

    @model_validator(mode="after")
    def _where(self):
        if self.transport == "tcp" and not self.host:
            raise ValueError("transport 'tcp' needs `host`")
        if self.transport == "rtu" and not self.serial_port:
            raise ValueError("transport 'rtu' needs `serial_port`")
        return self

    def input_map(self) -> dict[str, int]:
        raise NotImplementedError


class ModbusTurnstileConfig(ModbusLink):
    coils: Coils
    inputs: Inputs
    pulse_s: float = Field(default=0.5, ge=0.05, le=10, description="Length of one release pulse.")
    flood_report_s: float = Field(default=60.0, ge=1, le=3600,
                                  description="A flapping tamper contact (more changes than one alarm each "
                                              "may) is reported once when it starts (an alarm), then with its "
                                              "count once per this many seconds, and as over after this many "
                                              "seconds without one; the state it left is alarmed.")

    def input_map(self) -> dict[str, int]:
        return self.inputs.used()

    @model_validator(mode="after")
    def _wiring(self):
        if self.coils.release_in == self.coils.release_out:
            raise ValueError("coils.release_in and coils.release_out must be different relays")
        used = list(self.inputs.used().values())
        if len(set(used)) != len(used):
            raise ValueError("each input must be a different contact")
        return self


class Door(_Strict):
    release: int = Field(ge=0, le=65535, description="Coil that releases (unlocks) the door.")
    closed: int = Field(ge=0, le=65535, description="Discrete input: on while the door is closed.")


class SallyPortConfig(ModbusLink):
    """Two doors on one module; the interlock keeps one closed while the other opens."""

    outer: Door
    inner: Door
    fire_alarm: int | None = Field(default=None, ge=0, le=65535, description="Fire-alarm release input.")
    release_s: float = Field(default=5.0, ge=0.2, le=60, description="How long a door stays unlocked.")
    flood_report_s: float = Field(default=60.0, ge=1, le=3600,
                                  description="A forced door flapping (more changes than one alarm each may) "
                                              "is reported once when it starts (an alarm), then with its count "
                                              "once per this many seconds, and as over after this many seconds "
                                              "without one; the state it left is recorded.")

    def input_map(self) -> dict[str, int]:
        used = {"outer": self.outer.closed, "inner": self.inner.closed}
        if self.fire_alarm is not None:
            used["fire_alarm"] = self.fire_alarm
        return used

    @model_validator(mode="after")
    def _wiring(self):
        if self.outer.release == self.inner.release or self.outer.closed == self.inner.closed:
            raise ValueError("outer and inner need their own release coil and their own door contact")
        return self
