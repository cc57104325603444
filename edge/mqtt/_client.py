"""Building a paho client from [mqtt] settings: URIs, protocol, TLS, credentials, will.

paho is only imported here and in link.py; everything it raises while
setting up is turned into ``MqttConfigError`` naming the setting to fix.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttSettings
from edge.mqtt.errors import MqttConfigError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class Broker:
    uri: str
    host: str
    port: int
    tls: bool


def parse_broker(uri: str, where: str = "mqtt.brokers") -> Broker:
    """``mqtts://host:8883`` -> Broker; MqttConfigError naming ``where`` (the config key or the
    option it came from) and the URI when it is unusable."""
    parts = urlsplit(uri)
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttConfigError(f"{where}: {uri!r} has scheme {parts.scheme!r}; expected mqtt:// or mqtts://")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise MqttConfigError(f"{where}: {uri!r} has an invalid port; expected 1-65535") from None
    if not parts.hostname:
        raise MqttConfigError(f"{where}: {uri!r} has no host name")
    return Broker(uri, parts.hostname, port, parts.scheme == "mqtts")


def read_password(settings: MqttSettings) -> str | None:
    """The broker password, from ``password_file`` (never from the TOML itself)."""
    if settings.password_file is None:
        return None
    try:
        return settings.password_file.read_text().strip()
    except OSError as exc:
        raise MqttConfigError(f"mqtt.password_file: cannot read {settings.password_file}: "
                              f"{exc.strerror or exc}") from None


def connect_properties(settings: MqttSettings) -> Properties | None:
    if settings.protocol != "5":
        return None
    props = Properties(PacketTypes.CONNECT)
    # The broker keeps our subscriptions and queued commands this long while we are away.
    props.SessionExpiryInterval = settings.session_expiry_s
    return props


def make_client(settings: MqttSettings, client_id: str, broker: Broker) -> mqtt.Client:
    """A fresh paho client for one connection attempt to ``broker``."""
    v5 = settings.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # 3.1.1: a persistent session so commands queued while away are delivered.
        clean_session=None if v5 else False,
        reconnect_on_failure=False,  # the link owns reconnection (failover, jittered backoff)
    )
    client.connect_timeout = 5.0
    # The uplink bounds its own window; paho must never hold messages back on top of it.
    client.max_inflight_messages_set(max(settings.inflight + 16, 20))
    client.max_queued_messages_set(0)
    # Our side of Nagle: a small publish (a request, a PUBACK-awaited batch tail) must not
    # wait for the previous segment's ACK; the broker configs set set_tcp_nodelay for theirs.
    client.on_socket_open = _no_delay
    if settings.username:
        client.username_pw_set(settings.username, read_password(settings))
    if broker.tls:
        _set_tls(client, settings)
    return client


def _no_delay(client, userdata, sock) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (e.g. a test double): nothing to tune


def _set_tls(client: mqtt.Client, settings: MqttSettings) -> None:
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(settings, key)
        if path is not None and not path.is_file():
            raise MqttConfigError(f"mqtt.{key}: {path} does not exist or is not a file")
    if (settings.cert_file is None) != (settings.key_file is None):
        raise MqttConfigError("mqtt.cert_file and mqtt.key_file must be set together (the device identity)")
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(settings.ca_file) if settings.ca_file else None)
        if settings.cert_file:
            ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise MqttConfigError(f"mqtt TLS files (ca_file, cert_file, key_file) are unusable: {exc}") from None
    ctx.check_hostname = settings.tls_verify_hostname
    if not settings.tls_verify_hostname:  # opt-in and dangerous: say so every time it is used
        import structlog

        structlog.get_logger("edge.mqtt").warning(
            "mqtt_tls_hostname_not_verified", dangerous=True,
            detail="mqtt.tls_verify_hostname = false: any certificate the CA signed can pose as the broker")
    client.tls_set_context(ctx)


def classify_connect_error(exc: BaseException, broker: Broker) -> tuple[str, str]:
    """(layer, readable message) for an error raised while opening a connection."""
    if isinstance(exc, socket.gaierror):
        return "dns", f"cannot resolve {broker.host}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "tls", f"broker certificate rejected: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "tcp", f"connection refused by {broker.host}:{broker.port} (is the broker running?)"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "tcp", f"no answer from {broker.host}:{broker.port} within the connect timeout"
    if isinstance(exc, OSError):
        return "tcp", f"cannot connect to {broker.host}:{broker.port}: {exc.strerror or exc}"
    return "mqtt", str(exc)
