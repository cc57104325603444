"""Over-the-air update end to end: a real TUF repository over HTTP, the real daemon started
through the slot launcher, restarted as systemd would (exit 75), confirmed or rolled back."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from edge.testing.daemon import DaemonProcess, dump_toml
from edge.testing.wait import wait_for
from edge.update import boot
from edge.update.contract import EVENT_PAYLOADS
from edge.update.slots import Slots
from tests._gate_helpers import events
from tests._update_helpers import (
    RepoServer,
    base_install,
    new_repo,
    shim_running_this_edge,
    wheelhouse,
)

EX_RESTART = boot.EX_RESTART


@pytest.fixture
def channel(tmp_path):
    repo = new_repo(tmp_path / "central")
    server = RepoServer(repo.folder)
    yield repo, server
    server.stop()


@pytest.fixture
def device(tmp_path, channel):
    repo, server = channel
    root = tmp_path / "root"
    base_install(root)
    Slots(root).install_launcher()
    (tmp_path / "tuf-root.json").write_bytes((repo.meta_dir / "1.root.json").read_bytes())
    config = {"device_id": "dev-1", "site": "site-1", "role": "gate", "logging": {"format": "json"},
              "drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": 5}],
              "update": {"metadata_url": f"{server.url}/metadata/", "targets_url": f"{server.url}/targets/",
                         "trusted_root": str(tmp_path / "tuf-root.json"), "install_root": str(root),
                         "check_interval_s": 1, "health_deadline_s": 8, "python": sys.executable}}
    daemon = DaemonProcess(tmp_path / "edge", config)
    daemon.command = [sys.executable, str(root / "opt/edge/boot.py"), "--root", str(root), "--"]
    yield daemon, root
    daemon.kill()


def _exit_code(daemon, timeout=60.0) -> int:
    try:
        return daemon.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"daemon did not exit within {timeout}s:\n{daemon.log_tail()}") from None


def _types(daemon) -> list[str]:
    return [e["type"] for e in events(daemon.state_dir, "update.*")]


def test_good_update_installs_restarts_and_confirms(tmp_path, channel, device):
    repo, _ = channel
    daemon, root = device
    repo.publish("gate", "all", wheelhouse(tmp_path / "build", "0.2.0", shim_running_this_edge()), "0.2.0")
    daemon.start()
    assert _exit_code(daemon) == EX_RESTART, daemon.log_tail()  # switched: asks to be restarted
    assert boot.linked_version(root) == "0.2.0"
    daemon.start()  # systemd's Restart=on-failure
    record = wait_for(lambda: (r := boot.read_record(root))["state"] == "confirmed" and r, what="confirmation", timeout=40)
    assert record["current"] == "0.2.0"
    assert _types(daemon) == ["update.offered", "update.installed", "update.confirmed"]
    for event in events(daemon.state_dir, "update.*"):  # what central reads matches the contract
        EVENT_PAYLOADS[event["type"]].model_validate(event["payload"])
    status = json.loads(daemon.cli("update", "status", "--json", check=True).stdout)
    assert status["slot"] == "0.2.0" and status["state"] == "confirmed"
    assert daemon.running


def test_unhealthy_release_rolls_back_on_its_own(tmp_path, channel, device):
    repo, _ = channel
    daemon, root = device
    # The new slot is on probation this long from the switch: enough for the launcher to start it
    # under load and for the confirm loop to see the failing driver, and no longer (it waits it out).
    daemon.config["update"]["health_deadline_s"] = 5
    daemon.config_path.write_text(dump_toml(daemon.config))
    bad = tmp_path / "bad.toml"  # the new release's daemon runs with a driver that keeps failing
    bad.write_text(dump_toml({**daemon.config, "drivers": [{"name": "hb", "kind": "sim.heartbeat",
                                                           "rate": 20, "fail_every": 1}]}))
    repo.publish("gate", "all", wheelhouse(tmp_path / "build", "0.2.0", shim_running_this_edge(bad)), "0.2.0")
    daemon.start()
    assert _exit_code(daemon) == EX_RESTART, daemon.log_tail()
    daemon.start()  # the new slot: unhealthy until its deadline, then it switches back
    assert _exit_code(daemon) == EX_RESTART, daemon.log_tail()
    record = boot.read_record(root)
    assert record["state"] == "rolled_back" and boot.linked_version(root) is None
    assert "driver" in record["last_result"]["reason"] and record["failed"] == ["0.2.0"]
    daemon.start()  # the old slot again; it does not take 0.2.0 a second time
    rolled = [e for e in events(daemon.state_dir, "update.rolled_back")]
    assert len(rolled) == 1 and rolled[0]["priority"] == "alarm" and "hb" in rolled[0]["payload"]["reason"]
    EVENT_PAYLOADS["update.rolled_back"].model_validate(rolled[0]["payload"])
    since = time.time()
    wait_for(lambda: (json.loads(daemon.cli("update", "status", "--json").stdout or "{}").get("checked_at") or 0)
             > since, what="a check by the old slot", timeout=40)
    assert boot.read_record(root)["state"] == "rolled_back" and daemon.running


def test_power_cut_during_the_install_leaves_the_old_slot_and_the_update_resumes(tmp_path, channel, device):
    repo, _ = channel
    daemon, root = device
    repo.publish("gate", "all", wheelhouse(tmp_path / "build", "0.2.0", shim_running_this_edge()), "0.2.0")
    daemon.start()
    wait_for(lambda: boot.read_record(root).get("state") == "installing", what="the install to begin", timeout=40)
    daemon.kill()  # SIGKILL: the power cut
    assert boot.linked_version(root) is None
    daemon.start()  # the launcher picks the base install again; the daemon tidies and retries
    assert _exit_code(daemon) == EX_RESTART, daemon.log_tail()
    assert boot.linked_version(root) == "0.2.0"
    interrupted = events(daemon.state_dir, "update.interrupted")
    assert len(interrupted) == 1 and interrupted[0]["payload"]["version"] == "0.2.0"
    daemon.start()
    wait_for(lambda: boot.read_record(root)["state"] == "confirmed", what="confirmation after the retry", timeout=40)
