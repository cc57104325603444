"""MQTT sync: the link (connection), the uplink (outbox -> broker), device state, topics.

The link (and paho behind it) is imported when first asked for: the config's validators and
the CLI use ``edge.mqtt.topics`` alone, and must not pay for the connection's code.
"""

from edge.mqtt.errors import MqttConfigError, MqttError, MqttRefused, MqttUnavailable

__all__ = ["Delivery", "MqttConfigError", "MqttError", "MqttLink", "MqttRefused", "MqttUnavailable"]


def __getattr__(name: str):
    if name in ("Delivery", "MqttLink"):
        from edge.mqtt import link

        return getattr(link, name)
    raise AttributeError(f"module 'edge.mqtt' has no attribute {name!r}")
