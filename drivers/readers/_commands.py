"""Commands a ``reader.osdp`` driver accepts and the OSDP commands each becomes."""

from __future__ import annotations

from typing import Any, Literal

import osdp
from pydantic import BaseModel, ConfigDict, Field

from edge.driver import parse_command_args
from edge.errors import CommandError
from edge.schema import PIN_HASH_HEX, PIN_SALT_HEX

Outcome = Literal["grant", "deny", "hold"]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reader_no: int = Field(default=0, ge=0, le=255)


class FeedbackArgs(_Args):
    outcome: Outcome
    seconds: float = Field(default=3.0, gt=0, le=25.5, description="How long the LED shows it.")


class CheckPinArgs(_Args):
    salt: str = Field(pattern=PIN_SALT_HEX, description="PBKDF2 salt, hex.")
    hash: str = Field(pattern=PIN_HASH_HEX, description="PBKDF2-HMAC-SHA256 of the PIN, hex.")
    iterations: int = Field(default=100_000, ge=10_000, le=10_000_000)


# outcome -> (LED colour, flashing, buzzer beeps: (on, off, repeat) in 100 ms units or None)
_SIGNAL = {
    "grant": (osdp.CommandLEDColor.Green, False, (1, 0, 1)),
    "deny": (osdp.CommandLEDColor.Red, False, (2, 1, 2)),
    "hold": (osdp.CommandLEDColor.Amber, True, (5, 5, 1)),
}
COMMANDS = {"feedback": FeedbackArgs, "check_pin": CheckPinArgs, "status": _Args}


def parse(name: str, args: dict[str, Any]):
    model = COMMANDS.get(name)
    if model is None:
        raise CommandError(f"reader does not support command {name!r}; supported: {', '.join(COMMANDS)}")
    return parse_command_args(model, name, args or {})


def feedback(a: FeedbackArgs) -> list[dict[str, Any]]:
    """The LED (temporary, then back to the reader's idle colour) and buzzer commands of an outcome."""
    color, flashing, beeps = _SIGNAL[a.outcome]
    ticks = max(1, min(255, round(a.seconds * 10)))
    led = {"command": osdp.Command.LED, "reader": a.reader_no, "led_number": 0, "control_code": 2,
           "on_count": 3 if flashing else ticks, "off_count": 3 if flashing else 0,
           "on_color": color, "off_color": osdp.CommandLEDColor.Black if flashing else color,
           "timer_count": ticks, "temporary": True}
    out = [led]
    if beeps:
        on, off, rep = beeps
        out.append({"command": osdp.Command.Buzzer, "reader": a.reader_no, "control_code": 2,
                    "on_count": on, "off_count": off, "rep_count": rep})
    return out
