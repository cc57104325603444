"""Errors of the MQTT link. paho's return and reason codes become these at this boundary."""

from __future__ import annotations

from edge.errors import EdgeError


class MqttError(EdgeError):
    """Something about the MQTT connection failed."""


class MqttUnavailable(MqttError):
    """There is no broker connection right now; nothing was sent."""


class MqttConfigError(MqttError):
    """The [mqtt] settings cannot be used (bad URI, unreadable password or certificate file)."""


class MqttRefused(MqttError):
    """The broker answered with an MQTT reason code >= 0x80 (for example 0x87 not authorized)."""

    def __init__(self, message: str, code: int, reason: str):
        super().__init__(message)
        self.code, self.reason = code, reason
