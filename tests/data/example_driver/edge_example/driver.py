"""``example.bell``: rings on command and reports each ring as an ``example.rang`` event."""

from __future__ import annotations

import click
from pydantic import BaseModel, Field

from edge.driver import Driver, DriverConfig


class RangPayload(BaseModel):
    """Payload of ``example.rang``."""

    times: int = Field(ge=1, le=10, description="How many times the bell rang.")


EVENT_PAYLOADS = {"example.rang": RangPayload}


class BellConfig(DriverConfig):
    loudness: int = Field(default=3, ge=1, le=10)


class BellDriver(Driver):
    Config = BellConfig
    command_effects = {"ring": "operate"}

    def handle(self, name, args):
        if name != "ring":
            return super().handle(name, args)
        times = int(args.get("times", 1))
        event = self.ctx.emit("example.rang", RangPayload(times=times).model_dump(), "normal")
        return {"rang": times, "seq": event.seq}


@click.group()
def bell() -> None:
    """The example door bell (an out-of-tree driver family)."""


@bell.command("hello")
def hello() -> None:
    """Say that the plug-in's CLI is wired in."""
    click.echo("the bell plug-in answers")
