"""Red team: another account on the device reads the device's broker credentials.

``mqtt.key_file`` is the device's identity at the broker and ``mqtt.password_file``
its password. Left readable by others (a key copied in with the default umask),
any local account, such as the tablet UI's user or a compromised service, could
connect as the device: publish events and results in its name, read its topics.
The reader key, the scanner secret, the trust anchors and the secrets folder are
already refused when others may read them; these two were not. ``edge run``
refuses to start (exit 78, naming key and file), ``edge config check`` says the
same, and the same files at 0640 connect (the positive control).
"""

from __future__ import annotations

import os

import pytest

from edge.testing.certs import make_pki
from edge.testing.wait import wait_for

DEVICE = "dev-1"


@pytest.fixture
def tls(tmp_path, mosquitto_factory):
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki", devices=(DEVICE,))
    return mosquitto_factory(tls={"ca": pki["ca"], **pki["server"]}), pki


@pytest.mark.parametrize("setting", ["key_file", "password_file"])
def test_credentials_readable_by_others_stop_the_daemon_and_private_ones_connect(tmp_path, tls, edge_daemon,
                                                                                  base_config, setting):
    broker, pki = tls
    device = pki["devices"][DEVICE]
    password = tmp_path / "mqtt.password"
    password.write_text("not used by this broker\n")
    secret = device["key"] if setting == "key_file" else str(password)
    os.chmod(secret, 0o644)  # as copied in by hand with the default umask
    base_config.update(mqtt={"brokers": [broker.uri], "ca_file": pki["ca"], "cert_file": device["cert"],
                             "key_file": device["key"], "password_file": str(password),
                             "username": DEVICE, "backoff_min_s": 0.1, "backoff_max_s": 0.5})
    os.chmod(password if setting == "key_file" else device["key"], 0o600)
    daemon = edge_daemon(base_config, start=False)

    run = daemon.cli("run", timeout=60)
    assert run.returncode == 78, (run.returncode, run.stderr[-2000:])
    assert f"mqtt.{setting}: {secret}" in run.stderr and "readable or writable by others" in run.stderr
    assert "chmod o-rwx" in run.stderr
    assert not (daemon.state_dir / "events.db").exists(), "nothing may start on a bad config"
    check = daemon.cli("config", "check", str(daemon.config_path))
    assert check.returncode == 78 and f"mqtt.{setting}: {secret}" in check.stdout + check.stderr

    # Positive control: the same files, readable by the service's group at most, connect.
    os.chmod(secret, 0o640)
    daemon.start()
    wait_for(lambda: '"mqtt_connected"' in daemon.log_tail(10**6), what="connected over TLS", timeout=30)
