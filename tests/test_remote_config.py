"""Signed remote configuration end to end: real mosquitto, the real daemon, real signatures.

A change of one driver's options restarts that driver only; a change that leaves the
daemon unhealthy (a broker it cannot reach) is rolled back on its own to the last good
config. Refusals (unsigned, wrong key, keys outside the allowlist, expired) are in
tests/security/test_remote_config_refusals.py.
"""

from __future__ import annotations

import json
import time

from edge.config import load_settings
from edge.testing.broker import free_port
from edge.update.remote_config import build_document
from tests._gate_helpers import events
from tests._remote_config_helpers import DEVICE, SITE, device_config, keys, publish, wait_events  # noqa: F401


def test_driver_option_change_restarts_that_driver_only(mosquitto, edge_daemon, device_config,  # noqa: F811
                                                        keys):  # noqa: F811
    daemon = edge_daemon(device_config)
    pid = daemon.proc.pid
    publish(mosquitto, build_document({"drivers.hb1.rate": 20}, site=SITE, device=DEVICE, version=1,
                                      keys=[keys["config"][0]]))
    applied = wait_events(daemon, "config.applied")[0]["payload"]
    assert applied == {"version": 1, "restarted": ["hb1"]}
    assert daemon.running and daemon.proc.pid == pid  # the daemon itself did not restart
    beats = events(daemon.state_dir, "sim.heartbeat")
    n1 = [e["payload"]["n"] for e in beats if e["source"] == "hb1"]
    n2 = [e["payload"]["n"] for e in beats if e["source"] == "hb2"]
    assert n1.count(0) == 2, "hb1 restarted once with its new rate"
    assert n2 == list(range(len(n2))), "hb2 never restarted"
    assert (daemon.workdir / "edge.remote.json").exists()
    # The change survives a restart: the file beside the local one is laid over it.
    daemon.restart()
    loaded = load_settings(daemon.config_path)
    assert [d.options()["rate"] for d in loaded.drivers] == [20, 5]
    assert "rate = 5" in daemon.config_path.read_text()  # the local file stays the base


def test_a_change_that_makes_the_daemon_unhealthy_is_rolled_back(mosquitto, edge_daemon,
                                                                 device_config, keys):  # noqa: F811
    daemon = edge_daemon(device_config)
    publish(mosquitto, build_document({"mqtt.brokers": [f"mqtt://127.0.0.1:{free_port()}"]}, site=SITE,
                                      device=DEVICE, version=1, keys=[keys["config"][0]]))
    assert daemon.proc.wait(40) == 75, daemon.log_tail()  # accepted: a core key restarts the daemon
    daemon.start()  # as systemd would; it cannot reach the broker the new config names
    assert daemon.proc.wait(40) == 75, daemon.log_tail()  # rolled back: restart on the good config
    daemon.start()
    rolled = wait_events(daemon, "config.rolled_back")
    assert rolled[0]["priority"] == "alarm" and "broker" in rolled[0]["payload"]["reason"]
    assert not (daemon.workdir / "edge.remote.json").exists()  # no good remote config before: local only
    record = json.loads((daemon.state_dir / "remote-config.json").read_text())
    assert record["failed"] == [1] and record["pending"] is None
    assert [e["type"] for e in events(daemon.state_dir, "config.*")] == ["config.accepted", "config.rolled_back"]


def test_sigkill_while_a_change_is_on_probation_is_settled_at_the_next_start(mosquitto, edge_daemon,
                                                                              device_config, keys):  # noqa: F811
    daemon = edge_daemon(device_config)
    publish(mosquitto, build_document({"drivers.hb1.rate": 20}, site=SITE, device=DEVICE, version=1,
                                      keys=[keys["config"][0]]))
    record = daemon.state_dir / "remote-config.json"
    deadline = time.monotonic() + 30
    while not (record.exists() and json.loads(record.read_text()).get("pending") == 1):
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.02)
    daemon.kill()  # the power cut, while the new driver options are being health-checked
    daemon.start()
    applied = wait_events(daemon, "config.applied")
    assert applied[-1]["payload"]["version"] == 1
    state = json.loads(record.read_text())
    assert state["applied"] == 1 and state["pending"] is None
    assert [d.options()["rate"] for d in load_settings(daemon.config_path).drivers] == [20, 5]
