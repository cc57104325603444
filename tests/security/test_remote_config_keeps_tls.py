"""Red team: one stolen ``config`` key takes a TLS device off TLS.

``mqtt.brokers`` may be changed remotely so central can move brokers. With it,
one config key could point every device of the site at ``mqtt://`` on any
host: the device's events (who is where, alarms) and its broker password then
cross the prison network in clear, to the attacker. A device whose local file
uses only ``mqtts://`` refuses such a document (``not_allowed``) and stays on
its broker; a remote move to another ``mqtts://`` broker still applies.
"""

from __future__ import annotations

import json

import pytest

from edge.testing.broker import free_port
from edge.testing.certs import issue, make_pki
from edge.update.remote_config import build_document
from tests._remote_config_helpers import DEVICE, SITE, keys, publish, wait_events  # noqa: F401


@pytest.fixture
def tls_device(tmp_path, mosquitto_factory, base_config, keys):  # noqa: F811
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki", devices=(DEVICE,))
    broker = mosquitto_factory(tls={"ca": pki["ca"], **pki["server"]})
    central = issue(tmp_path / "pki", *pki["ca_obj"], "central")
    device = pki["devices"][DEVICE]
    base_config.update(
        mqtt={"brokers": [broker.uri], "ca_file": pki["ca"], "cert_file": device["cert"],
              "key_file": device["key"], "backoff_min_s": 0.1, "backoff_max_s": 0.5},
        trust={"central_keys": [str(keys["commands"][1]), str(keys["config"][1])]},
        remote_config={"enabled": True, "health_deadline_s": 6},
        drivers=[{"name": "hb1", "kind": "sim.heartbeat", "rate": 5}])
    return broker, pki["ca"], central, base_config


def _publish(broker, ca: str, cert: dict, doc: dict) -> None:
    publish(broker, doc, tls={"ca_certs": ca, "certfile": cert["cert"], "keyfile": cert["key"]})


def test_one_config_key_cannot_take_the_device_off_tls_but_may_move_it(tls_device, edge_daemon,
                                                                        keys):  # noqa: F811
    broker, ca, central, config = tls_device
    config_key = keys["config"][0]
    daemon = edge_daemon(config)
    pid = daemon.proc.pid
    plain = f"mqtt://127.0.0.1:{free_port()}"  # the attacker's broker, no TLS
    _publish(broker, ca, central, build_document({"mqtt.brokers": [plain]}, site=SITE, device=DEVICE,
                                                 version=1, keys=[config_key]))
    refused = wait_events(daemon, "config.refused")[0]
    assert refused["payload"]["problem"] == "not_allowed", refused
    assert "TLS" in refused["payload"]["detail"] and plain in refused["payload"]["detail"]
    assert daemon.running and daemon.proc.pid == pid
    assert not (daemon.workdir / "edge.remote.json").exists()
    # Mixed lists are no better: the device would fall back to the plaintext one.
    _publish(broker, ca, central, build_document({"mqtt.brokers": [broker.uri, plain]}, site=SITE,
                                                 device=DEVICE, version=2, keys=[config_key]))
    assert wait_events(daemon, "config.refused", 2)[-1]["payload"]["problem"] == "not_allowed"

    # Positive control: moving to another mqtts:// broker (the same one by name) applies.
    moved = f"mqtts://localhost:{broker.port}"
    _publish(broker, ca, central, build_document({"mqtt.brokers": [moved]}, site=SITE, device=DEVICE,
                                                 version=3, keys=[config_key]))
    assert daemon.proc.wait(40) == 75, daemon.log_tail()  # accepted: a core key restarts the daemon
    daemon.start()
    applied = wait_events(daemon, "config.applied")
    assert applied[-1]["payload"]["version"] == 3, applied
    assert json.loads((daemon.workdir / "edge.remote.json").read_text())["settings"]["mqtt.brokers"] == [moved]
