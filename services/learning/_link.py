"""A minimal MQTT 5 client with the daemon link's interface, for tools outside the daemon.

The content server, the benchmark and in-process tests use it; inside the
daemon the learning component uses ``daemon.link`` (the uplink's connection)
instead, so a tablet keeps one connection and one identity.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import EdgeError


class LinkError(EdgeError):
    """The standalone MQTT client could not connect or publish."""


class StandaloneLink:
    """subscribe/publish/connected over one paho client; subscriptions survive reconnects."""

    def __init__(self, uri: str, client_id: str | None = None, *, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None):
        parts = urlsplit(uri)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise LinkError(f"{uri!r} is not a broker URI; expected mqtt://host:port or mqtts://host:port")
        self.host = parts.hostname
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=client_id or f"edge-tool-{uuid.uuid4().hex[:8]}")
        if parts.scheme == "mqtts":
            self.client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(0.2, 5)
        self._subs: dict[str, tuple[Callable, int]] = {}
        self._connected = threading.Event()
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout: float = 10.0) -> StandaloneLink:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise LinkError(f"cannot reach broker {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.stop()
            raise LinkError(f"broker {self.host}:{self.port} did not accept the connection in {timeout}s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic_filter: str, handler: Callable, qos: int = 1) -> None:
        with self._lock:
            self._subs[topic_filter] = (handler, qos)
        self.client.message_callback_add(topic_filter, self._adapt(handler))
        if self.connected:
            self.client.subscribe(topic_filter, qos)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties=None) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    @staticmethod
    def _adapt(handler: Callable) -> Callable:
        def on_message(client, userdata, msg):
            handler(msg.topic, msg.payload, msg.properties)
        return on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            return
        sock = client.socket()
        if sock is not None and hasattr(sock, "setsockopt"):
            # Chunk answers are large writes followed by small ones: without this, Nagle
            # and the peer's delayed ACK add ~40 ms to every request/response round trip.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            subs = [(t, q) for t, (_, q) in self._subs.items()]
        if subs:
            client.subscribe(subs)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
