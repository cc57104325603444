"""The real daemon facing a hostile release channel: refusals are alarms, nothing is installed,
and a good channel still updates (positive control in tests/test_update_daemon.py)."""

from __future__ import annotations

import sys
import time

import pytest

from edge.update import boot
from tests._gate_helpers import events
from tests._update_helpers import (
    RepoServer,
    base_install,
    new_repo,
    shim_running_this_edge,
    tamper,
    wheelhouse,
)


@pytest.fixture
def setup(tmp_path, edge_daemon):
    repo = new_repo(tmp_path / "central")
    server = RepoServer(repo.folder)
    root = tmp_path / "root"
    base_install(root)
    (tmp_path / "tuf-root.json").write_bytes((repo.meta_dir / "1.root.json").read_bytes())
    config = {"device_id": "dev-1", "site": "site-1", "role": "tablet", "logging": {"format": "json"},
              "update": {"metadata_url": f"{server.url}/metadata/", "targets_url": f"{server.url}/targets/",
                         "trusted_root": str(tmp_path / "tuf-root.json"), "install_root": str(root),
                         "check_interval_s": 1, "python": sys.executable}}

    def start():
        return edge_daemon(config)

    yield repo, root, start
    server.stop()


def _refusal(daemon, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = events(daemon.state_dir, "update.refused")
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no update.refused event:\n{daemon.log_tail()}")


def _publish(tmp_path, repo, version):
    archive = wheelhouse(tmp_path / "build", version, shim_running_this_edge())
    return repo.publish("tablet", "all", archive, version)


def test_tampered_release_is_refused_with_an_alarm(tmp_path, setup):
    repo, root, start = setup
    path = _publish(tmp_path, repo, "0.2.0")
    tamper(repo.targets_dir / path)
    daemon = start()
    refused = _refusal(daemon)
    assert refused["priority"] == "alarm" and refused["payload"]["problem"] == "hash_mismatch"
    assert boot.linked_version(root) is None and not (root / "opt/edge/releases/0.2.0").exists()
    assert daemon.running


def test_frozen_channel_is_refused_with_an_alarm(tmp_path, setup):
    repo, root, start = setup
    _publish(tmp_path, repo, "0.2.0")
    repo.timestamp(days=-1)
    daemon = start()
    assert _refusal(daemon)["payload"]["problem"] == "expired"
    assert boot.linked_version(root) is None


def test_an_older_release_than_the_running_one_is_refused(tmp_path, setup):
    repo, root, start = setup
    _publish(tmp_path, repo, "0.0.9")
    daemon = start()
    refused = _refusal(daemon)
    assert refused["payload"]["problem"] == "older_release"
    assert boot.linked_version(root) is None and not (root / "opt/edge/releases").exists()
