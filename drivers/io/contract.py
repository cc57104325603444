"""Payloads of the ``sallyport.*`` events; a sally port also emits the turnstile's vocabulary
(``turnstile.granted``, ``passage``, ``grant_timeout``, ``emergency``, ``fault``, ``online``,
``offline``) with the turnstile's payloads, so the gate policy drives it like a turnstile."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: int = Field(ge=1, le=32)
    door: Literal["outer", "inner"]


class SallyPortDoor(_Payload):
    """sallyport.door: a door's contact changed (open or closed)."""

    open: bool


class SallyPortForced(_Payload):
    """sallyport.forced (alarm): a door opened without being released (forced, or its lock failed)."""


EVENT_PAYLOADS: dict[str, type[BaseModel]] = {"sallyport.door": SallyPortDoor,
                                              "sallyport.forced": SallyPortForced}
