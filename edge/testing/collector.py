"""An MQTT subscriber that collects what the daemon publishes and waits by condition."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttCollector:
    """Subscribes (QoS 1) and keeps every message; ``events`` flattens event batches.

    With ``session=True`` it uses a persistent MQTT 5 session so messages published
    while it is disconnected (for example across a broker restart) still arrive.
    """

    def __init__(self, host: str, port: int, topics: list[str] | str = "edge/#", *,
                 client_id: str | None = None, session: bool = True, tls: dict | None = None):
        self.host, self.port = host, port
        self.topics = [topics] if isinstance(topics, str) else topics
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._session = session
        self.client.reconnect_delay_set(0.05, 0.5)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe([(t, 1) for t in self.topics])
            self._connected.set()

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> MqttCollector:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self._session else 0
        self.client.connect(self.host, self.port, clean_start=not self._session, properties=props)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"collector could not connect to {self.host}:{self.port}")
        time.sleep(0.05)  # SUBACK round trip before the caller starts publishing
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def events(self, type_prefix: str = "") -> list[dict]:
        """Every event received in event batches, in arrival order (duplicates kept)."""
        with self._cond:
            msgs = list(self.messages)
        out = []
        for m in msgs:
            if "/events/" in m.topic:
                out.extend(e for e in m.json()["events"] if e["type"].startswith(type_prefix))
        return out

    def on_topic(self, suffix: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[MqttCollector], Any], timeout: float = 15.0,
                 what: str = "condition") -> Any:
        """Block until ``predicate(self)`` is truthy; returns its value. No sleeps."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = len(self.messages)
                self._cond.release()
                try:
                    result = predicate(self)
                finally:
                    self._cond.acquire()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}; "
                                       f"{len(self.messages)} messages received")
                if len(self.messages) == seen:  # else one arrived while the predicate ran
                    self._cond.wait(remaining)
