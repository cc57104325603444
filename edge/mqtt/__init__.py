"""MQTT sync: the link (connection), the uplink (outbox -> broker), device state, topics."""

from edge.mqtt.errors import MqttConfigError, MqttError, MqttRefused, MqttUnavailable
from edge.mqtt.link import Delivery, MqttLink

__all__ = ["Delivery", "MqttConfigError", "MqttError", "MqttLink", "MqttRefused", "MqttUnavailable"]
