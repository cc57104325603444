"""Broker checks, layer by layer: dns, tcp, tls (with the certificate's expiry), mqtt, roundtrip.

The MQTT steps use the device's own TLS identity and credentials but a client
id of ``<client_id>-doctor`` with a clean, non-persistent session: reusing the
daemon's id would take over its session and steal its queued commands. A broker
that binds the client id to the certificate (``use_username_as_clientid``, as the
shipped ones do) gives the probe the daemon's id whatever it asks for, so while the
daemon is connected to a broker its own connection is the answer for that broker:
the doctor reports it and opens no second session there.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import uuid
from datetime import UTC, datetime

from edge.doctor.check import Check

_TIMEOUT_S = 5.0
_CERT_WARN_DAYS = 7


def no_brokers(settings) -> list[Check]:
    if settings.mqtt.brokers:
        return []
    return [Check("broker", True, "no brokers configured: this device works offline only")]


def check_broker(settings, uri: str) -> list[Check]:
    from edge.mqtt._client import parse_broker
    from edge.mqtt.errors import MqttConfigError

    try:
        broker = parse_broker(uri)
    except MqttConfigError as exc:
        return [Check("broker", False, str(exc), "fix mqtt.brokers", uri, "config")]
    steps = [_dns, _tcp] + ([_tls] if broker.tls else []) + [_daemon_link(settings, broker) or _mqtt]
    out: list[Check] = []
    for step in steps:
        result = step(settings, broker)
        results = result if isinstance(result, list) else [result]
        out += results
        if not all(r.ok for r in results):
            break
    return out


def _daemon_link(settings, broker):
    """The running daemon's own connection to ``broker`` as the mqtt step, or None (the daemon is
    stopped, or not connected there): then the doctor's probe is the only way to ask the broker."""
    from edge.cli._state import read_status

    try:
        status = read_status(settings.state_dir) or {}
    except Exception:  # unreadable for this account: the probe answers instead
        return None
    link = (status.get("components") or {}).get("mqtt") if status.get("running") else None
    if not (isinstance(link, dict) and link.get("connected") and link.get("broker") == broker.uri):
        return None

    def step(_settings, _broker) -> list[Check]:
        return [_check(broker, "mqtt", True, f"the running daemon is connected as client {link.get('client_id')} "
                       f"since {link.get('connected_since')} (its own session: the doctor opens no second one "
                       "there; a broker binding client ids to certificates would hand it the daemon's)")]
    return step


def _check(broker, step: str, ok: bool, detail: str, hint: str = "") -> Check:
    return Check("broker", ok, detail, hint, broker.uri, step)


def _dns(settings, broker) -> Check:
    try:
        infos = socket.getaddrinfo(broker.host, broker.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return _check(broker, "dns", False, f"cannot resolve {broker.host}: {exc.strerror}",
                      "check the host name in mqtt.brokers and the DNS servers (resolvectl status)")
    addresses = sorted({info[4][0] for info in infos})
    return _check(broker, "dns", True, f"{broker.host} -> {', '.join(addresses)}")


def _tcp(settings, broker) -> Check:
    started = time.monotonic()
    try:
        with socket.create_connection((broker.host, broker.port), timeout=_TIMEOUT_S) as sock:
            peer = sock.getpeername()[0]
    except ConnectionRefusedError:
        return _check(broker, "tcp", False, f"connection refused by {broker.host}:{broker.port}",
                      "is the broker running and listening on this port? (systemctl status mosquitto)")
    except TimeoutError:
        return _check(broker, "tcp", False, f"no answer from {broker.host}:{broker.port} in {_TIMEOUT_S:g}s",
                      "a firewall or route drops the packets: check the VPN/routing and the port")
    except OSError as exc:
        return _check(broker, "tcp", False, f"cannot connect to {broker.host}:{broker.port}: {exc.strerror}",
                      "check the network link (ip addr, ip route)")
    ms = (time.monotonic() - started) * 1000
    return _check(broker, "tcp", True, f"connected to {peer}:{broker.port} in {ms:.1f} ms")


def tls_context(cfg) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.cert_file:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file) if cfg.key_file else None)
    ctx.check_hostname = cfg.tls_verify_hostname
    return ctx


def _tls(settings, broker) -> Check:
    from edge.config_files import problem_with

    cfg = settings.mqtt
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(cfg, key)
        if path is not None and (problem := problem_with(path, "file")) is not None:
            return _check(broker, "tls", False, f"mqtt.{key}: {problem}",
                          f"put the file at {path} or change mqtt.{key}, then run `edge config check`")
    try:
        ctx = tls_context(cfg)
    except (ssl.SSLError, OSError) as exc:
        return _check(broker, "tls", False, f"TLS files unusable: {exc}",
                      "check mqtt.ca_file, mqtt.cert_file and mqtt.key_file exist and match")
    try:
        with socket.create_connection((broker.host, broker.port), timeout=_TIMEOUT_S) as raw, \
                ctx.wrap_socket(raw, server_hostname=broker.host) as tls:
            cert, version = tls.getpeercert(), tls.version()
    except ssl.SSLCertVerificationError as exc:
        return _check(broker, "tls", False, f"broker certificate rejected: {exc.verify_message}",
                      "mqtt.ca_file must be the CA that signed the broker's certificate, and the "
                      "certificate must name the host in mqtt.brokers")
    except (ssl.SSLError, OSError) as exc:
        return _check(broker, "tls", False, f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}",
                      "is this port TLS (mqtts://)? does the broker accept this device's certificate?")
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    subject = dict(part[0] for part in cert.get("subject", ()))
    detail = (f"{version}, certificate {subject.get('commonName', '?')} expires "
              f"{expires:%Y-%m-%d} ({days:.0f} days)")
    if days < _CERT_WARN_DAYS:
        return _check(broker, "tls", False, detail, "the broker's certificate expires soon: renew it now")
    return _check(broker, "tls", True, detail)


class _Probe:
    """One short-lived paho client and the events its callbacks set."""

    def __init__(self, settings, broker):
        from edge.mqtt._client import make_client

        cfg = settings.mqtt
        self.client_id = f"{cfg.client_id or settings.device_id}-doctor"
        self.client = make_client(cfg, self.client_id, broker)
        self.v5 = cfg.protocol == "5"
        self.connack = threading.Event()
        self.subacked = threading.Event()
        self.received = threading.Event()
        self.rc = self.sub_codes = None
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connack.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, msg: self.received.set()

    def _on_connect(self, client, userdata, flags, rc, props=None):
        self.rc = rc
        self.connack.set()

    def _on_subscribe(self, client, userdata, mid, codes, props=None):
        self.sub_codes = codes
        self.subacked.set()


def _mqtt(settings, broker) -> list[Check]:
    from edge.mqtt._client import classify_connect_error
    from edge.mqtt.errors import MqttConfigError

    try:
        probe = _Probe(settings, broker)
    except MqttConfigError as exc:
        return [_check(broker, "mqtt", False, str(exc), "fix the [mqtt] settings it names")]
    try:
        kwargs = {"clean_start": True} if probe.v5 else {}
        probe.client.connect(broker.host, broker.port, keepalive=10, **kwargs)
    except (OSError, ValueError) as exc:
        layer, message = classify_connect_error(exc, broker)
        return [_check(broker, layer, False, message, "the broker closed the connection while setting it up")]
    probe.client.loop_start()
    try:
        return _connack_and_roundtrip(settings, broker, probe)
    finally:
        probe.client.disconnect()
        probe.client.loop_stop()


def _connack_and_roundtrip(settings, broker, probe: _Probe) -> list[Check]:
    if not probe.connack.wait(_TIMEOUT_S * 2) or probe.rc is None:
        hint = ("the broker may have refused this device's client certificate (mqtt.cert_file)"
                if broker.tls else "is this an MQTT port?")
        return [_check(broker, "mqtt", False, "connection closed without a CONNACK", hint)]
    if probe.rc.is_failure:
        return [_check(broker, "mqtt", False, f"CONNACK refused: {probe.rc.getName()} (0x{probe.rc.value:02x})",
                       f"the broker does not accept this device's credentials as client {probe.client_id}: "
                       "check the certificate or mqtt.username/password_file and the broker's ACL")]
    ok = _check(broker, "mqtt", True, f"CONNACK accepted with the device's credentials "
                f"(client id {probe.client_id}, MQTT {'5' if probe.v5 else '3.1.1'})")
    return [ok, _roundtrip(settings, broker, probe)]


def _roundtrip(settings, broker, probe: _Probe) -> Check:
    from edge.mqtt import topics

    topic = f"{topics.device_prefix(settings.site, settings.device_id)}/doctor/{uuid.uuid4().hex[:12]}"
    hint = f"the broker's ACL must let this device read and write {topics.device_prefix(settings.site, settings.device_id)}/#"
    probe.client.subscribe(topic, qos=1)
    if not probe.subacked.wait(_TIMEOUT_S):
        return _check(broker, "roundtrip", False, f"no SUBACK for {topic}", hint)
    if any(getattr(code, "is_failure", False) for code in probe.sub_codes or ()):
        return _check(broker, "roundtrip", False, f"subscribe refused on {topic}", hint)
    started = time.monotonic()
    probe.client.publish(topic, b"edge doctor", qos=1)
    if not probe.received.wait(_TIMEOUT_S):
        return _check(broker, "roundtrip", False, f"published to {topic} but nothing came back", hint)
    ms = (time.monotonic() - started) * 1000
    return _check(broker, "roundtrip", True, f"publish/subscribe round trip on {topic} in {ms:.1f} ms")
