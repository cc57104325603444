"""mTLS device identity and per-device ACLs against a real mosquitto with TLS."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from edge.config import Settings
from edge.events import make_event
from edge.mqtt import MqttLink
from edge.store import Store
from edge.testing.wait import holds_within

# The certificate's CN is the MQTT username (use_identity_as_username): a device may
# only write under its own name. dev-2 doubles as central's observer here.
ACL = """\
pattern readwrite edge/v1/+/%u/#
user dev-2
topic read edge/#
"""


@pytest.fixture
def tls_broker(mosquitto_factory, tls_material):
    return mosquitto_factory(tls={"ca": tls_material["ca"], **tls_material["server"]}, acl=ACL)


@pytest.fixture
def make_link(base_config):
    made = []

    def make(broker, *, device_id="dev-1", cert=None, ca=None, store=True, **mqtt):
        cfg = {**base_config, "device_id": device_id,
               "mqtt": {"brokers": [broker.uri], "ca_file": ca, "backoff_min_s": 0.05, "backoff_max_s": 0.3,
                        **({"cert_file": cert["cert"], "key_file": cert["key"]} if cert else {}), **mqtt}}
        settings = Settings(**cfg)
        st = Store(settings.state_dir, device=device_id, site="site-1") if store else None
        link = MqttLink(settings, st, device_state=False)
        made.append((link, st))
        link.start()
        return link, st

    yield make
    for link, st in made:
        link.stop()
        if st:
            st.close()


def test_device_with_valid_certificate_connects_and_delivers(tls_broker, tls_material, make_link,
                                                             mqtt_collector):
    observer = mqtt_collector(tls_broker, "edge/#", tls={"ca": tls_material["ca"],
                                                         **tls_material["devices"]["dev-2"]})
    link, store = make_link(tls_broker, cert=tls_material["devices"]["dev-1"], ca=tls_material["ca"])
    assert link.wait_connected(10), link.status()["last_error"]
    stored = store.append(make_event(device="dev-1", site="site-1", type="sim.beat", source="t"))
    observer.wait_for(lambda c: any(e["id"] == stored.id for e in c.events()), timeout=10)
    assert holds_within(lambda: store.stats()["pending"] == 0)


@pytest.mark.parametrize("identity", ["rogue_ca", "no_certificate"])
def test_device_without_a_valid_client_certificate_is_refused(tls_broker, tls_material, make_link, identity):
    cert = tls_material["rogue_device"] if identity == "rogue_ca" else None
    link, store = make_link(tls_broker, cert=cert, ca=tls_material["ca"])
    assert holds_within(lambda: link.status()["connect_failures"] >= 2), link.status()
    assert not link.connected
    error = link.status()["last_error"]
    assert error["layer"] == "tls", error
    assert error["broker"] == tls_broker.uri


def test_wrong_ca_fails_the_tls_layer_with_hostname_verification_on(tls_broker, tls_material, make_link):
    link, _ = make_link(tls_broker, cert=tls_material["devices"]["dev-1"], ca=tls_material["rogue_ca"])
    assert holds_within(lambda: link.status()["last_error"] is not None)
    assert not link.connected
    error = link.status()["last_error"]
    assert error["layer"] == "tls" and "certificate" in error["message"], error


def test_publishing_as_another_device_is_refused_0x87_and_events_stay_pending(tls_broker, tls_material,
                                                                            make_link):
    # dev-1's certificate, configured as dev-3: its event topics are not dev-1's to write.
    link, store = make_link(tls_broker, device_id="dev-3", client_id="dev-1",
                            cert=tls_material["devices"]["dev-1"], ca=tls_material["ca"])
    assert link.wait_connected(10), link.status()["last_error"]
    store.append_many([make_event(device="dev-3", site="site-1", type="sim.beat", source="t") for _ in range(3)])
    assert holds_within(lambda: link.status()["refusals"] >= 2), link.status()  # refused, then retried later
    status = link.status()
    assert status["last_refusal"]["code"] == "0x87" and status["last_refusal"]["reason"] == "Not authorized"
    assert status["acked_events"] == 0
    assert store.stats()["pending"] == 3
    # mosquitto 2.0.11 also drops the connection after a denied publish; the link comes back
    # and retries with backoff, and the refusal stays visible in status either way.
    assert link.wait_connected(10)


def test_daemon_reports_the_refusal_in_edge_status_and_keeps_the_events(tls_broker, tls_material, base_config,
                                                                       edge_daemon):
    import json

    dev1 = tls_material["devices"]["dev-1"]
    config = {**base_config, "device_id": "dev-3",
              "mqtt": {"brokers": [tls_broker.uri], "client_id": "dev-1", "ca_file": tls_material["ca"],
                       "cert_file": dev1["cert"], "key_file": dev1["key"], "backoff_min_s": 0.05,
                       "backoff_max_s": 0.3},
              "drivers": [{"name": "beat", "kind": "sim.heartbeat", "rate": 5, "count": 3}]}
    daemon = edge_daemon(config)

    def refused():
        report = json.loads(daemon.cli("status", "--json").stdout)
        mqtt = report["daemon"]["components"]["mqtt"]
        done = mqtt["refusals"] and mqtt["last_refusal"]["code"] == "0x87" and report["outbox"]["pending"] >= 3
        return report if done else None

    assert holds_within(refused, timeout=25), daemon.log_tail()
    report = refused()
    assert report["daemon"]["components"]["mqtt"]["acked_events"] == 0  # nothing refused is lost
    text = daemon.cli("status").stdout
    assert "REFUSED, last 0x87 Not authorized" in text


def _server_cert_for(folder, tls_material, hostname: str) -> dict:
    """A broker certificate from the test CA that names another host than 127.0.0.1."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = tls_material["ca_obj"]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"cert": str(folder / "other.pem"), "key": str(folder / "other.key")}
    (folder / "other.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "other.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def test_hostname_verification_is_on_by_default(mosquitto_factory, tls_material, make_link, tmp_path):
    broker = mosquitto_factory(tls={"ca": tls_material["ca"], **_server_cert_for(tmp_path, tls_material,
                                                                                 "broker.elsewhere.example")})
    dev1 = tls_material["devices"]["dev-1"]
    strict, _ = make_link(broker, cert=dev1, ca=tls_material["ca"], store=False)
    assert holds_within(lambda: strict.status()["last_error"] is not None)
    assert not strict.connected
    error = strict.status()["last_error"]
    assert error["layer"] == "tls" and "127.0.0.1" in error["message"], error
    # Switching verification off (a lab with IP-only brokers) connects; the CA is still checked.
    with capture_logs() as logs:
        lax, _ = make_link(broker, cert=dev1, ca=tls_material["ca"], store=False, tls_verify_hostname=False)
        assert lax.wait_connected(10), lax.status()["last_error"]
    assert any(e["event"] == "mqtt_tls_hostname_not_verified" and e["dangerous"] for e in logs)  # said so
