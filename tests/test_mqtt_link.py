"""The MQTT link against real mosquitto brokers: subscribe/publish, reconnect, failover, TLS."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from edge.config import Settings
from edge.mqtt import MqttLink, MqttUnavailable
from edge.testing.wait import wait_for


def _settings(base_config: dict, brokers: list[str], **mqtt) -> Settings:
    cfg = dict(base_config)
    cfg["mqtt"] = {"brokers": brokers, "backoff_min_s": 0.05, "backoff_max_s": 0.5, **mqtt}
    return Settings(**cfg)


@pytest.fixture
def make_link():
    links: list[MqttLink] = []

    def make(settings: Settings, **kwargs) -> MqttLink:
        link = MqttLink(settings, device_state=False, **kwargs)
        links.append(link)
        link.start()
        return link

    yield make
    for link in links:
        link.stop()


def test_publish_and_subscribe_round_trip(base_config, mosquitto, make_link):
    link = make_link(_settings(base_config, [mosquitto.uri]))
    assert link.wait_connected(10)
    got: queue.SimpleQueue = queue.SimpleQueue()
    subscribed = threading.Event()
    link.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: got.put((t, p)))
    link.subscribe("edge/v1/site-1/dev-1/probe", lambda t, p, props: subscribed.set())
    # The SUBACK may trail the call: publish probes until one comes back.
    for _ in range(50):
        link.publish("edge/v1/site-1/dev-1/probe", b"x", qos=1).wait(5)
        if subscribed.wait(0.1):
            break
    delivery = link.publish("edge/v1/site-1/dev-1/cmd", b'{"id":"1"}', qos=1)
    assert delivery.wait(5), delivery.reason
    assert got.get(timeout=15) == ("edge/v1/site-1/dev-1/cmd", b'{"id":"1"}')
    status = link.status()
    assert status["connected"] and status["broker"] == mosquitto.uri
    assert status["last_puback_at"] is not None


def test_publish_without_connection_raises(base_config, make_link):
    from edge.testing import free_port

    link = make_link(_settings(base_config, [f"mqtt://127.0.0.1:{free_port()}"]))
    with pytest.raises(MqttUnavailable):
        link.publish("edge/v1/site-1/dev-1/x", b"1")
    assert not link.connected


def test_subscriptions_restored_and_commands_queued_while_away_arrive(base_config, mosquitto, make_link,
                                                                     mqtt_collector):
    """clean_start=False + session expiry: a command sent while the device was away arrives."""
    got: queue.SimpleQueue = queue.SimpleQueue()
    link = make_link(_settings(base_config, [mosquitto.uri]))
    link.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: got.put(p))
    assert link.wait_connected(10)
    sender = mqtt_collector(mosquitto, "unused/#")
    # Wait until the subscription is live (a round trip through the broker).
    for _ in range(100):
        sender.client.publish("edge/v1/site-1/dev-1/cmd", b"warmup", qos=1).wait_for_publish(5)
        try:
            if got.get(timeout=0.1) == b"warmup":
                break
        except queue.Empty:
            continue
    link.stop()
    sender.client.publish("edge/v1/site-1/dev-1/cmd", b"while-away", qos=1).wait_for_publish(5)
    link2 = make_link(_settings(base_config, [mosquitto.uri]))
    link2.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: got.put(p))
    assert link2.wait_connected(10)
    seen = []
    while b"while-away" not in seen:
        seen.append(got.get(timeout=20))


@pytest.mark.parametrize("name", ["dev", "test", "demo"])
def test_shipped_broker_configs_disable_nagle_and_persist(name):
    from pathlib import Path

    lines = (Path(__file__).parent.parent / "config" / f"mosquitto-{name}.conf").read_text().splitlines()
    settings = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip() and not line.startswith("#")}
    assert settings["set_tcp_nodelay"] == "true"  # PUBACKs are not held back ~40 ms by Nagle
    assert settings["persistence"] == "true"  # sessions and queued commands survive a restart
    assert settings["max_queued_messages"] == "0"


def test_dev_broker_config_is_accepted_by_mosquitto(tmp_path):
    import socket
    import subprocess
    from pathlib import Path

    from edge.testing import free_port
    from edge.testing.broker import mosquitto_binary

    port = free_port()
    text = (Path(__file__).parent.parent / "config" / "mosquitto-dev.conf").read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = text.replace("./mosquitto-data/", f"{tmp_path}/")
    conf = tmp_path / "m.conf"
    conf.write_text(text + "user root\n")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start with the dev config"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)


def test_link_socket_sets_tcp_nodelay(base_config, mosquitto, make_link):
    import socket

    link = make_link(_settings(base_config, [mosquitto.uri]))
    assert link.wait_connected(10)
    sock = link._client.socket()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_mqtt_311_session_round_trip(base_config, mosquitto, make_link):
    link = make_link(_settings(base_config, [mosquitto.uri], protocol="3.1.1"))
    assert link.wait_connected(10)
    got: queue.SimpleQueue = queue.SimpleQueue()
    link.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: got.put(p))
    for _ in range(50):
        assert link.publish("edge/v1/site-1/dev-1/cmd", b"hello", qos=1).wait(5)
        try:
            assert got.get(timeout=0.2) == b"hello"
            break
        except queue.Empty:
            continue
    else:
        pytest.fail("no message came back over MQTT 3.1.1")


@pytest.fixture
def password_broker(mosquitto_factory, tmp_path):
    import subprocess

    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "dev-1", "s3cret"], check=True)
    return mosquitto_factory(allow_anonymous=False, extra=f"password_file {pw}")


def test_username_and_password_from_a_file(base_config, password_broker, make_link, tmp_path):
    secret = tmp_path / "mqtt.password"
    secret.write_text("s3cret\n")
    link = make_link(_settings(base_config, [password_broker.uri], username="dev-1", password_file=str(secret)))
    assert link.wait_connected(10), link.status()["last_error"]


def test_wrong_password_is_reported_with_the_connack_reason(base_config, password_broker, make_link, tmp_path):
    secret = tmp_path / "mqtt.password"
    secret.write_text("wrong")
    link = make_link(_settings(base_config, [password_broker.uri], username="dev-1", password_file=str(secret)))
    wait_for(lambda: link.status()["connect_failures"] >= 1, 10, "a refused connect")
    error = link.status()["last_error"]
    assert not link.connected and error["layer"] == "mqtt"
    assert error["code"] in ("0x86", "0x87") and "refused the connection" in error["message"], error
    assert "wrong" not in json.dumps(link.status())  # the password never shows


def test_missing_password_file_names_the_setting(base_config, password_broker, make_link, tmp_path):
    link = make_link(_settings(base_config, [password_broker.uri], username="dev-1",
                               password_file=str(tmp_path / "absent")))
    error = wait_for(lambda: link.status()["last_error"], 10, "the config error")
    assert error["layer"] == "config" and "mqtt.password_file" in error["message"]


def test_broker_that_never_sends_connack_is_given_up_on(base_config, make_link, monkeypatch):
    import socket

    import edge.mqtt.link as link_module

    monkeypatch.setattr(link_module, "_CONNACK_WAIT_S", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts TCP (the kernel does), never speaks MQTT
    try:
        link = make_link(_settings(base_config, [f"mqtt://127.0.0.1:{silent.getsockname()[1]}"]))
        wait_for(lambda: link.status()["connect_failures"] >= 2, 10, "two connects given up")
        error = link.status()["last_error"]
        assert link.status()["connect_failures"] >= 2 and "no CONNACK" in error["message"], error
    finally:
        silent.close()


def test_messages_queued_for_the_session_wait_for_a_late_subscriber(base_config, mosquitto, make_link,
                                                                   mqtt_collector):
    """A component that subscribes after the link connected still gets what arrived before."""
    settings = _settings(base_config, [mosquitto.uri])
    first = make_link(settings)
    echoed = threading.Event()
    first.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: echoed.set())
    assert first.wait_connected(10)
    for _ in range(100):  # until the subscription is live at the broker (SUBACK done)
        first.publish("edge/v1/site-1/dev-1/cmd", b"probe", qos=1).wait(5)
        if echoed.wait(0.1):
            break
    first.stop()  # offline; the broker keeps the session and its subscription
    sender = mqtt_collector(mosquitto, "unused/#")
    sender.client.publish("edge/v1/site-1/dev-1/cmd", b"sent-while-away", qos=1).wait_for_publish(5)
    again = make_link(settings)  # nobody subscribed yet when the queued message arrives
    assert again.wait_connected(10)
    wait_for(lambda: again._unclaimed, 10, "the queued message", interval=0.01)
    got: queue.SimpleQueue = queue.SimpleQueue()
    again.subscribe("edge/v1/site-1/dev-1/cmd", lambda t, p, props: got.put(p))
    seen = [got.get(timeout=5)]
    while b"sent-while-away" not in seen:  # a redelivered probe may come first
        seen.append(got.get(timeout=5))


def test_a_lost_broker_is_said_plainly_with_since_when_and_the_check_to_run(base_config, mosquitto_factory,
                                                                          make_link, monkeypatch):
    """`edge status` read 'mqtt 0x80 … Unspecified error' while the broker was down: paho's name for
    a socket that closed without a DISCONNECT. The summary now says disconnected since when,
    retrying, what happened in words, and points to `edge doctor --only broker`."""
    import edge.mqtt.link as link_module

    monkeypatch.setattr(link_module, "reconnect_delay", lambda *a, **k: 1.5)  # the loss is read before a retry
    broker = mosquitto_factory()
    link = make_link(_settings(base_config, [broker.uri]))
    assert link.wait_connected(10), link.status()["last_error"]
    assert "doctor" not in link.status()["summary"] and link.status()["disconnected_since"] is None
    broker.stop(kill=True)  # no DISCONNECT: the socket just closes
    status = wait_for(lambda: (st := link.status())["disconnected_since"] and st, 10, "the link to notice")
    summary = status["summary"]
    assert summary.startswith(f"DISCONNECTED since {status['disconnected_since']}, retrying (brokers: "
                              f"{broker.uri})"), summary
    assert summary.endswith("; check: edge doctor --only broker"), summary
    assert "connection lost: the broker went away or the network dropped (no reason given)" in summary, summary
    assert "Unspecified" not in summary and "0x80" not in summary and status["last_error"]["code"] is None
    broker.start()  # positive control: back, and said so
    assert link.wait_connected(10), link.status()["last_error"]
    assert link.status()["summary"].startswith("connected to ") and link.status()["disconnected_since"] is None


def test_a_link_that_never_connected_says_so():
    from edge.mqtt._summary import summary

    down = {"connected": False, "connects": 0, "disconnected_since": "2026-03-01T10:00:00Z",
            "brokers": ["mqtt://broker:1883"], "last_puback_at": None, "refusals": 0, "last_error": None}
    assert summary(down) == ("NOT CONNECTED yet since 2026-03-01T10:00:00Z, retrying (brokers: mqtt://broker:1883); "
                             "last PUBACK never; check: edge doctor --only broker")
