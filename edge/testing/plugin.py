"""pytest fixtures of the mock driver harness (registered under ``pytest11``).

- ``mosquitto``: a plain broker on a free port (function scope, persistence on).
- ``mosquitto_factory``: ``mosquitto_factory(tls=..., acl=...)`` for variants.
- ``edge_daemon``: ``edge_daemon(config_dict)`` starts ``edge run`` and waits for READY.
- ``mqtt_collector``: ``mqtt_collector(broker, topics)`` subscribes and waits by condition.
- ``tls_material``: a CA, a server certificate and a device certificate made with cryptography.
- ``postgres_url``: an empty database on a real PostgreSQL server (skips, saying why, without one).
- ``ingest_factory``: ``ingest_factory(workdir, broker_uri, db_url, *args)`` starts ``edge central ingest``.
Everything started is stopped at teardown.
"""

from __future__ import annotations

import pytest

from edge.testing.broker import Mosquitto
from edge.testing.collector import MqttCollector
from edge.testing.daemon import DaemonProcess


@pytest.fixture
def mosquitto_factory(tmp_path_factory):
    started: list[Mosquitto] = []

    def make(**kwargs) -> Mosquitto:
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"), **kwargs).start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop(kill=True)


@pytest.fixture
def mosquitto(mosquitto_factory) -> Mosquitto:
    return mosquitto_factory()


@pytest.fixture
def edge_daemon(tmp_path_factory):
    started: list[DaemonProcess] = []

    def make(config: dict, *, start: bool = True, env: dict | None = None) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path_factory.mktemp("edge"), config, env=env)
        started.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in started:
        daemon.kill()


@pytest.fixture
def mqtt_collector():
    started: list[MqttCollector] = []

    def make(broker: Mosquitto, topics="edge/#", **kwargs) -> MqttCollector:
        collector = MqttCollector("127.0.0.1", broker.port, topics, **kwargs).start()
        started.append(collector)
        return collector

    yield make
    for collector in started:
        collector.stop()


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory):
    from edge.testing.certs import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def postgres_server():
    from edge.testing.postgres import Postgres, PostgresUnavailable

    try:
        pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'edge[central]'")
        server = Postgres().start()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server can be started: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    return postgres_server.new_database()


@pytest.fixture
def ingest_factory():
    """``edge central ingest`` child processes, killed at teardown whatever the test did."""
    from edge.testing.central import IngestProcess

    started: list[IngestProcess] = []

    def make(*args, **kwargs) -> IngestProcess:
        proc = IngestProcess(*args, **kwargs)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()
