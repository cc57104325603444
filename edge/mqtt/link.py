"""The MQTT link: one broker connection shared by the uplink, device state and commands.

Threads: ``mqtt-link`` owns reconnection (broker list in turn, exponential
backoff with full jitter); each connection gets a fresh paho client whose own
network thread (``loop_start``) runs the callbacks. Callbacks never block: they
record, hand work to a queue or set an Event, and return. paho's return and
reason codes are turned into our errors and log entries here and nowhere else.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from edge.config import Settings
from edge.mqtt._client import (
    Broker,
    classify_connect_error,
    connect_properties,
    make_client,
    parse_broker,
)
from edge.mqtt._summary import summary
from edge.mqtt.backoff import reconnect_delay
from edge.mqtt.errors import MqttConfigError, MqttError, MqttUnavailable
from edge.supervisor import SupervisedThread

log = structlog.get_logger("edge.mqtt")

Handler = Callable[[str, bytes, Any], None]
AckCallback = Callable[[int, int, str], None]  # (mid, reason code value, reason name)
_STABLE_S = 10.0  # a connection that lasted this long resets the backoff
_CONNACK_WAIT_S = 10.0
_WATCH_IDLE_S = 5.0  # connected and healthy: how often _watch checks that paho's thread still runs
_UNCLAIMED_MAX = 1000  # messages kept for a subscriber that has not subscribed yet
# PUBLISH bytes beyond the payload: fixed header, topic (edge/v1/site/device/events/family
# fits in 200 bytes), packet id and properties.
_PACKET_OVERHEAD = 256


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _stop_loop(client) -> None:
    """paho's ``loop_stop`` checks its thread, then joins it; when that thread ends on its own in
    between, it clears the attribute and the join raises AttributeError. Seen with 1 000 simulated
    devices through a broker restart: it ended the mqtt-link thread, and the device never
    reconnected. The thread is gone either way, which is all we wanted."""
    try:
        client.loop_stop()
    except AttributeError:
        log.debug("mqtt_loop_already_stopped")


class Delivery:
    """What ``publish`` returns: ``wait(timeout)`` is True once the broker acknowledged it."""

    def __init__(self, mid: int):
        self.mid = mid
        self.code: int | None = None
        self.reason: str | None = None
        self._done = threading.Event()

    def _set(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until acknowledged (or refused, or the connection is lost); True on success."""
        self._done.wait(timeout)
        return self.code is not None and self.code < 0x80

    @property
    def done(self) -> bool:
        return self._done.is_set()


class MqttLink:
    """Connection to central's broker; ``daemon.link``. Start/stop like any Component."""

    name = "mqtt"

    def __init__(self, settings: Settings, store=None, *, health: Callable[[], dict] | None = None,
                 device_state: bool = True, on_change: Callable[[], None] | None = None):
        self.settings = settings
        self.cfg = settings.mqtt
        if not self.cfg.brokers:
            raise MqttConfigError("mqtt.brokers is empty; configure at least one broker URI")
        self.brokers: list[Broker] = [parse_broker(u) for u in self.cfg.brokers]
        self.client_id = self.cfg.client_id or settings.device_id
        self.batch_max_bytes = self.cfg.batch_max_bytes  # lowered to what the broker accepts
        self._subs: dict[str, tuple[Handler, int]] = {}
        self._subs_lock = threading.Lock()
        self._unclaimed: deque = deque(maxlen=_UNCLAIMED_MAX)
        self._client = None
        self._client_lock = threading.Lock()
        self._pending: dict[int, Delivery | AckCallback] = {}  # mid -> who waits for its PUBACK
        self._orphans: dict[int, tuple[int, str]] = {}  # PUBACKs that beat their registration
        self._ack_lock = threading.Lock()
        self._listeners: list[Callable[[bool], None]] = []
        # Told (without blocking) when connection or refusals change, so status files refresh.
        self._on_change = on_change or (lambda: None)
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._wake = threading.Event()  # _watch: set with _ended, and by stop()
        self._up = threading.Event()
        self._thread: SupervisedThread | None = None
        self._fault_emit = None  # how a thread fault is recorded (needs the store)
        self._reached = self._reported = False  # this session: CONNACK ok / its failure already reported
        self._refused = False  # this session: the broker refused us (long back-off), not just unreachable
        self._will: tuple[str, bytes] | None = None
        self._stats: dict[str, Any] = {
            "broker": None, "connected_since": None, "session_present": None, "last_puback_at": None,
            "last_error": None, "refusals": 0, "connects": 0, "connect_failures": 0,
            "handler_errors": 0, "last_refusal": None, "disconnected_since": _now_iso()}
        self.uplink = None
        self.state = None
        if store is not None:
            from edge.mqtt.uplink import Uplink  # imported here: it builds on this module

            self.uplink = Uplink(self, store, settings)
            self._fault_emit = self.uplink.fault_emit
        if device_state:
            from edge.mqtt.state import DeviceState

            self.state = DeviceState(self, settings, store, health)

    # -- the interface other subsystems use ------------------------------------

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler(topic, payload, props)``.

        The handler runs on paho's network thread and must not block. The
        subscription is restored on every reconnect. Messages the persistent
        session delivered before this call are handed over at once (on the
        caller's thread), so subscribing after ``start()`` loses nothing.
        """
        import paho.mqtt.client as mqtt

        with self._subs_lock:
            self._subs[topic_filter] = (handler, qos)
            early = [m for m in self._unclaimed if mqtt.topic_matches_sub(topic_filter, m[0])]
            for m in early:
                self._unclaimed.remove(m)
        for topic, payload, props in early:  # arrived (persistent session) before this subscriber
            self._call(topic_filter, handler, topic, payload, props)
        client = self._client
        if client is not None and self.connected:
            self._send_subscribe(client, [(topic_filter, qos)])

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                properties=None, *, on_ack: AckCallback | None = None) -> Delivery:
        """Send now (not durable); raises MqttUnavailable when there is no connection.

        The returned Delivery's ``wait(timeout)`` tells whether the broker
        acknowledged it; ``on_ack(mid, code, reason)`` is called instead when given
        (on the network thread: must not block).
        """
        client = self._client
        if client is None or not self.connected:
            raise MqttUnavailable("not connected to any broker; the message was not sent")
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != 0:
            import paho.mqtt.client as mqtt

            raise MqttUnavailable(f"could not send to {topic}: {mqtt.error_string(info.rc)}")
        delivery = Delivery(info.mid)
        waiter: Delivery | AckCallback = on_ack or delivery
        with self._ack_lock:
            early = self._orphans.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = waiter
        if early is not None:
            self._deliver(waiter, info.mid, *early)
        return delivery

    def add_connection_listener(self, fn: Callable[[bool], None]) -> None:
        """``fn(connected)`` on every connect and loss, on the network thread: must not block."""
        self._listeners.append(fn)

    def set_will(self, topic: str, payload: bytes) -> None:
        """Retained QoS 1 last will, registered with every new connection."""
        self._will = (topic, payload)

    def notify_health_changed(self) -> None:
        if self.state is not None:
            self.state.notify_health_changed()

    def rebirth(self) -> None:
        """Re-publish the retained device state now (the ``rebirth`` command)."""
        if self.state is not None:
            self.state.rebirth()

    def wait_connected(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    # -- Component --------------------------------------------------------------

    def start(self) -> None:
        if self.state is not None:
            self.state.start()
        if self.uplink is not None:
            self.uplink.start()
        self._thread = SupervisedThread(self._run, name="mqtt-link", emit=self._fault_emit)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish in-flight acks, publish ``offline`` (bounded wait), then disconnect."""
        deadline = time.monotonic() + timeout
        if self.uplink is not None:
            self.uplink.stop(timeout=min(2.0, timeout / 2))
        if self.state is not None:
            self.state.stop(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
        self._stopping.set()
        if self._thread is not None:
            self._thread.stop()
        client = self._client
        if client is not None:
            client.disconnect()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))

    def status(self) -> dict[str, Any]:
        out = dict(self._stats, connected=self.connected, client_id=self.client_id,
                   brokers=[b.uri for b in self.brokers])
        if self.uplink is not None:
            uplink = self.uplink.status()
            if uplink["last_refusal"] is None:  # the link's own record stands until the uplink's
                del uplink["last_refusal"]
            out.update(uplink)
        threads = [t for t in (self._thread, self.state and self.state._thread) if t is not None]
        down = [t.name for t in threads if t.faults and not t.is_alive()]
        if down:
            out.update(status="down", down=[*out.get("down", []), *down])
        if self.state is not None:
            out["boot_seq"] = self.state.boot_seq
        out["summary"] = summary(out)
        return out

    # -- reconnection -------------------------------------------------------------

    def _run(self) -> None:
        attempt, index = 0, 0
        while not self._stopping.is_set():
            broker = self.brokers[index]
            began = time.monotonic()
            reached = self._session(broker)
            if self._stopping.is_set():
                break
            if reached and time.monotonic() - began >= _STABLE_S:
                attempt = 0  # a connection that held: start the backoff over, same broker
            else:
                attempt += 1
                if not reached:
                    index = (index + 1) % len(self.brokers)  # fail over to the next broker
            delay = reconnect_delay(attempt - 1 if attempt else 0, refused=self._refused,
                                    base=self.cfg.backoff_min_s, cap=self.cfg.backoff_max_s)
            log.debug("mqtt_retry_scheduled", delay_s=round(delay, 3), attempt=attempt,
                      refused=self._refused, next_broker=self.brokers[index].uri)
            self._stopping.wait(delay)

    def _session(self, broker: Broker) -> bool:
        """Connect to ``broker`` and stay until the connection ends. True if CONNACK succeeded."""
        self._ended.clear()
        self._wake.clear()
        self._reached = self._reported = self._refused = False
        client = self._new_client(broker)
        if client is None:
            self._refused = True  # a config problem: retrying fast cannot help
            return False
        try:
            kwargs = {"clean_start": False, "properties": connect_properties(self.cfg)} \
                if self.cfg.protocol == "5" else {}
            client.connect(broker.host, broker.port, keepalive=self.cfg.keepalive_s, **kwargs)
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket errors are OSErrors
            self._refused = isinstance(exc, ssl.SSLError)  # a TLS refusal is no outage
            self._error(broker, *classify_connect_error(exc, broker))
            self._stats["connect_failures"] += 1
            self._client = None
            return False
        client.loop_start()
        self._watch(client, broker)
        _stop_loop(client)
        self._client = None
        self._fail_pending()
        return self._reached

    def _new_client(self, broker: Broker):
        try:
            client = make_client(self.cfg, self.client_id, broker)
        except MqttConfigError as exc:
            self._error(broker, "config", str(exc))
            return None
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(broker, flags, rc, props)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(broker, rc)
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        if self._will is not None:
            client.will_set(self._will[0], self._will[1], qos=1, retain=True)
        with self._client_lock:
            self._client = client
            with self._ack_lock:
                self._orphans.clear()
        return client

    def _watch(self, client, broker: Broker) -> None:
        """Wait while paho's thread runs the connection; on_disconnect sets _ended.

        paho has no deadline for the CONNACK itself: a broker that accepts TCP and
        then says nothing would hold us here forever without this one."""
        connack_deadline = time.monotonic() + _CONNACK_WAIT_S
        down_since = None
        while True:
            # Short waits only while something is due (CONNACK, a stop, a lost connection);
            # a healthy connection is checked every few seconds, not twice a second.
            steady = self._reached and not down_since and not self._stopping.is_set()
            self._wake.wait(_WATCH_IDLE_S if steady else 0.5)
            self._wake.clear()
            if self._ended.is_set():
                return
            if self._stopping.is_set() and not client.is_connected():
                return
            # Should paho's thread ever end without on_disconnect, do not wait forever.
            down_since = None if client.is_connected() or not self._reached else down_since or time.monotonic()
            if down_since and time.monotonic() - down_since > _CONNACK_WAIT_S:
                self._error(broker, "mqtt", "connection ended without a disconnect notice")
                return
            if not self._reached and time.monotonic() > connack_deadline:
                self._stats["connect_failures"] += 1
                self._error(broker, "mqtt", f"no CONNACK within {_CONNACK_WAIT_S:.0f} s after connecting")
                self._reported = True
                client.disconnect()
                connack_deadline = float("inf")

    # -- paho callbacks (network thread: never block) -------------------------------

    def _on_connect(self, broker: Broker, flags, rc, props=None) -> None:
        if rc.is_failure:
            self._reported = self._refused = True
            self._stats["connect_failures"] += 1
            self._error(broker, "mqtt", f"broker refused the connection: {rc.getName()}", code=rc.value)
            return
        self._reached = True
        self._limit_batch_bytes(broker, getattr(props, "MaximumPacketSize", None))
        self._stats.update(broker=broker.uri, connected_since=_now_iso(), connects=self._stats["connects"] + 1,
                           session_present=bool(flags.session_present), disconnected_since=None)
        log.info("mqtt_connected", broker=broker.uri, session_present=bool(flags.session_present),
                 client_id=self.client_id)
        with self._subs_lock:
            subs = [(f, q) for f, (_h, q) in self._subs.items()]
        if subs:
            self._send_subscribe(self._client, subs)
        self._up.set()
        for fn in self._listeners:
            fn(True)
        self._on_change()

    def _on_disconnect(self, broker: Broker, rc) -> None:
        was_up = self._up.is_set()
        self._up.clear()
        if not self._stopping.is_set():
            if was_up:
                self._lost(broker, rc)
            elif not self._reached and not self._reported:
                self._refused = True  # it answered, then closed: a refusal (TLS, ACL), not an outage
                self._stats["connect_failures"] += 1
                hint = " (over TLS: the broker may have refused the client certificate)" if broker.tls else ""
                self._error(broker, "tls" if broker.tls else "mqtt",
                            f"connection closed before CONNACK{hint}", code=rc.value)
        if was_up:
            self._stats["disconnected_since"] = _now_iso()
        self._stats["connected_since"] = None
        self._ended.set()
        self._wake.set()
        if was_up:
            for fn in self._listeners:
                fn(False)
            self._on_change()

    def _lost(self, broker: Broker, rc) -> None:
        # 0x80 is paho's word for a socket that closed with no DISCONNECT: say that, not "Unspecified error"
        if rc.value == 0x80:
            self._error(broker, "mqtt", "connection lost: the broker went away or the network dropped "
                        "(no reason given)", level="warning")
        else:  # the broker said why (MQTT 5 DISCONNECT): keep its reason and code
            self._error(broker, "mqtt", f"connection lost: {rc.getName()}", code=rc.value, level="warning")

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        code, reason = rc.value, rc.getName()
        with self._ack_lock:
            waiter = self._pending.pop(mid, None)
            if waiter is None:
                self._orphans[mid] = (code, reason)
        if code < 0x80:
            self._stats["last_puback_at"] = _now_iso()
        else:
            self._stats["refusals"] += 1
            self._stats["last_refusal"] = {"at": _now_iso(), "code": f"0x{code:02x}", "reason": reason}
            self._error(None, "mqtt", f"broker refused a publish: {reason}", code=code, level="warning")
            self._on_change()
        if waiter is not None:
            self._deliver(waiter, mid, code, reason)

    def _on_message(self, client, userdata, msg) -> None:
        with self._subs_lock:
            subs = list(self._subs.items())
        import paho.mqtt.client as mqtt

        payload, props = bytes(msg.payload), getattr(msg, "properties", None)
        matched = False
        for topic_filter, (handler, _qos) in subs:
            if mqtt.topic_matches_sub(topic_filter, msg.topic):
                matched = True
                self._call(topic_filter, handler, msg.topic, payload, props)
        if not matched:
            # A persistent session delivers queued messages right after CONNACK, possibly
            # before the component that wants them has subscribed: keep them for it.
            with self._subs_lock:
                if len(self._unclaimed) == self._unclaimed.maxlen:
                    log.warning("mqtt_unclaimed_message_dropped", topic=self._unclaimed[0][0])
                self._unclaimed.append((msg.topic, payload, props))

    def _call(self, topic_filter: str, handler: Handler, topic: str, payload: bytes, props) -> None:
        try:
            handler(topic, payload, props)
        except Exception as exc:
            # A subscriber's bug must not kill the network thread (and with it the
            # uplink); it is counted, logged with its type, and shown in status.
            self._stats["handler_errors"] += 1
            log.error("mqtt_handler_failed", topic_filter=topic_filter, error=repr(exc))

    def _on_subscribe(self, client, userdata, mid, reason_codes, props) -> None:
        for rc in reason_codes:
            if rc.is_failure:
                self._error(None, "mqtt", f"broker refused a subscription: {rc.getName()}", code=rc.value)

    # -- helpers ---------------------------------------------------------------------

    def _limit_batch_bytes(self, broker: Broker, max_packet: int | None) -> None:
        """Batches must fit the broker's maximum packet size (MQTT 5 CONNACK): a bigger one
        is refused by closing the connection, so nothing would ever be delivered."""
        configured = self.cfg.batch_max_bytes
        limit = configured if not max_packet else min(configured, max(256, max_packet - _PACKET_OVERHEAD))
        if limit != self.batch_max_bytes and limit < configured:
            log.warning("mqtt_batch_bytes_clamped", broker=broker.uri, configured=configured,
                        broker_max_packet=max_packet, batch_max_bytes=limit)
        self.batch_max_bytes = limit

    def _send_subscribe(self, client, subs: list[tuple[str, int]]) -> None:
        if client is None:
            return
        rc, _mid = client.subscribe(subs)
        if rc != 0:
            log.warning("mqtt_subscribe_not_sent", filters=[f for f, _ in subs], rc=int(rc))

    def _deliver(self, waiter, mid: int, code: int, reason: str) -> None:
        if isinstance(waiter, Delivery):
            waiter._set(code, reason)
        else:
            waiter(mid, code, reason)

    def _fail_pending(self) -> None:
        """The connection is gone: nothing still waiting will be acknowledged by it."""
        with self._ack_lock:
            pending, self._pending = self._pending, {}
            self._orphans.clear()
        for waiter in pending.values():
            if isinstance(waiter, Delivery):
                waiter._set(-1, "connection lost")
        # Uplink callbacks learn about the loss from the connection listener instead.

    def _error(self, broker: Broker | None, layer: str, message: str, *, code: int | None = None,
               level: str = "error") -> None:
        uri = broker.uri if broker else self._stats["broker"]
        self._stats["last_error"] = {"at": _now_iso(), "broker": uri, "layer": layer, "message": message,
                                     "code": None if code is None else f"0x{code:02x}"}
        getattr(log, level)("mqtt_error", broker=uri, layer=layer, message=message,
                            code=None if code is None else f"0x{code:02x}")


__all__ = ["Delivery", "MqttError", "MqttLink", "MqttUnavailable"]
