"""A gate never restarts for an update while a person is in a lane: the switch waits for
empty lanes, bounded by idle_wait_max_s, and is retried at the next check."""

from __future__ import annotations

import sys
import threading

import pytest

from edge.config import Settings
from edge.update import boot
from edge.update.agent import UpdateAgent
from tests._update_helpers import (
    RepoServer,
    base_install,
    new_repo,
    shim_running_this_edge,
    wheelhouse,
)


class FakeGate:
    """The gate engine's status as the update component reads it: lanes with an approach."""

    name = "gate"

    def __init__(self):
        self.approach = {"person": "visitor-1"}

    def status(self):
        return {"status": "ok", "lanes": {"lane1": {"approach": self.approach, "passing": None}}}


class FakeDaemon:
    def __init__(self, settings):
        self.settings, self.components, self.emitted, self.restarts = settings, [FakeGate()], [], []

    def emit(self, type, payload, priority, source):
        self.emitted.append(type)

    def request_restart(self, reason):
        self.restarts.append(reason)


@pytest.fixture
def agent(tmp_path):
    repo = new_repo(tmp_path / "central")
    server = RepoServer(repo.folder)
    repo.publish("gate", "all", wheelhouse(tmp_path / "build", "0.2.0", shim_running_this_edge()), "0.2.0")
    root = tmp_path / "root"
    base_install(root)
    (tmp_path / "root.json").write_bytes((repo.meta_dir / "1.root.json").read_bytes())
    settings = Settings(device_id="dev-1", site="site-1", role="gate", state_dir=tmp_path / "state", update={
        "metadata_url": f"{server.url}/metadata/", "targets_url": f"{server.url}/targets/",
        "trusted_root": tmp_path / "root.json", "install_root": root, "idle_wait_max_s": 0.5,
        "python": sys.executable})
    yield UpdateAgent(FakeDaemon(settings)), root
    server.stop()


def test_busy_lane_defers_the_switch_then_an_empty_lane_allows_it(agent):
    agent, root = agent
    daemon = agent._daemon
    assert agent.check_once() is False  # installed, but a person is in lane1
    assert daemon.restarts == [] and boot.linked_version(root) is None
    assert daemon.emitted == ["update.offered", "update.installed"]
    agent.settings = agent.settings.model_copy(update={"idle_wait_max_s": 30})
    threading.Timer(0.5, lambda: setattr(daemon.components[0], "approach", None)).start()
    assert agent.check_once() is True  # waited for the lane to empty, then switched
    assert daemon.restarts and boot.linked_version(root) == "0.2.0"
    assert daemon.emitted == ["update.offered", "update.installed"]  # not installed twice


def test_a_switch_without_the_launcher_is_rolled_back_not_left_pending(agent, monkeypatch):
    agent, root = agent
    monkeypatch.delenv("EDGE_SLOT", raising=False)
    agent.settings = agent.settings.model_copy(update={"idle_wait_max_s": 0})
    agent._daemon.components = []  # a tablet: always idle
    assert agent.check_once() is True and boot.linked_version(root) == "0.2.0"
    restarted = UpdateAgent(agent._daemon)  # the service started bin/edge again, not boot.py
    restarted.settings = restarted.settings.model_copy(update={"metadata_url": None})
    restarted.start()
    restarted.stop()
    record = boot.read_record(root)
    assert record["state"] == "rolled_back" and "launcher" in record["last_result"]["reason"]
    assert boot.linked_version(root) is None and "update.rolled_back" in agent._daemon.emitted
