"""A repository (or a man in the middle) that drips bytes must not stall the update thread.

python-tuf's own fetcher bounds each socket read, so one byte every 0.2 s kept a download
alive for as long as the sender liked. Every download now has a total deadline and a
throughput floor (edge/update/fetcher.py): here the real repository is served over
localhost HTTP with one file dripped, and the download is abandoned in time, reported
with the limit it passed, nothing is installed, and the next check (the drip stopped)
updates. Positive controls: the same repository served normally.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import pytest

from edge.testing.wait import wait_for
from edge.update import boot
from edge.update.contract import EVENT_PAYLOADS
from edge.update.settings import UpdateSettings
from edge.update.tuf_client import ReleaseSource, UpdateRefused
from tests._gate_helpers import events
from tests._update_helpers import (
    Quiet,
    RepoServer,
    base_install,
    new_repo,
    shim_running_this_edge,
    wheelhouse,
)

DRIP_S = 0.2  # one byte every 0.2 s: a timestamp.json takes minutes; a release, days
# allowance 1 s + 16384 bytes (ngclient's timestamp length limit) / 8000 bytes/s: 3.05 s.
# The window is long: only the deadline can stop it.
DEADLINE_ONLY = {"download_allowance_s": 1.0, "download_min_rate": 8000.0, "download_rate_window_s": 600.0}
TIMESTAMP_DEADLINE_S = 1.0 + 16384 / 8000
# The floor: below 1000 bytes/s over 1 s, checked from 0.5 + 1 s on (the deadline is 17 s).
FLOOR = {"download_allowance_s": 0.5, "download_min_rate": 1000.0, "download_rate_window_s": 1.0}


def dripping(name: str, *, headers: bool = False):
    """A handler that serves the repository, but files ending in ``name`` one byte at a time
    (the body only, or the status line and headers too) while ``state["on"]``."""
    state = {"on": True, "served": 0}

    class Dripping(Quiet):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            path = self.translate_path(self.path)
            if not (state["on"] and self.path.endswith(name) and os.path.isfile(path)):
                return super().do_GET()
            state["served"] += 1
            with open(path, "rb") as f:
                body = f.read()
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            if not headers:
                self.wfile.write(head)
                head = b""
            try:
                for i in range(len(head + body)):
                    self.wfile.write((head + body)[i:i + 1])
                    self.wfile.flush()
                    time.sleep(DRIP_S)
            except OSError:
                pass  # the device hung up: what we want
            self.close_connection = True

    return Dripping, state


@pytest.fixture
def repo(tmp_path):
    repo = new_repo(tmp_path / "central")
    (tmp_path / "tuf-root.json").write_bytes((repo.meta_dir / "1.root.json").read_bytes())
    return repo


@pytest.fixture
def serve(repo):
    servers = []

    def start(handler=Quiet) -> RepoServer:
        servers.append(RepoServer(repo.folder, handler))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _publish(tmp_path, repo, version="0.2.0", device_class="gate"):
    archive = wheelhouse(tmp_path / "build", version, shim_running_this_edge())
    repo.publish(device_class, "all", archive, version)
    return archive


def _source(tmp_path, server, limits, cache="device") -> ReleaseSource:
    settings = UpdateSettings(metadata_url=f"{server.url}/metadata/", targets_url=f"{server.url}/targets/",
                              trusted_root=tmp_path / "tuf-root.json", **limits)
    return ReleaseSource(settings, device_class="gate", site="site-1", cache_dir=tmp_path / cache)


def _refused(call) -> tuple[UpdateRefused, float]:
    start = time.monotonic()
    with pytest.raises(UpdateRefused) as refused:
        call()
    return refused.value, time.monotonic() - start


@pytest.mark.parametrize("headers", [False, True], ids=["body", "status-line-and-headers"])
def test_dripped_metadata_is_abandoned_at_its_deadline(tmp_path, repo, serve, headers):
    _publish(tmp_path, repo)
    handler, state = dripping("/timestamp.json", headers=headers)
    server = serve(handler)
    threads_before = threading.active_count()
    refusal, took = _refused(_source(tmp_path, server, DEADLINE_ONLY).find)
    assert state["served"] == 1
    assert refusal.problem == "too_slow", refusal
    assert TIMESTAMP_DEADLINE_S - 0.1 <= took <= TIMESTAMP_DEADLINE_S + 3, took  # + the other fetches
    facts = refusal.facts
    assert facts["limit"] == "deadline" and facts["role"] == "timestamp"
    assert facts["url"] == f"{server.url}/metadata/timestamp.json"
    # what came in before the deadline: the body's first bytes (or part of the headers: no body)
    assert facts["received_bytes"] <= (TIMESTAMP_DEADLINE_S / DRIP_S + 2) * (0 if headers else 1)
    assert TIMESTAMP_DEADLINE_S - 0.1 <= facts["elapsed_s"] <= TIMESTAMP_DEADLINE_S + 1  # this fetch alone
    assert "deadline of 3.0 s" in refusal.detail and "download_allowance_s" in refusal.detail
    EVENT_PAYLOADS["update.refused"].model_validate({"running": "0.1.0", "problem": refusal.problem,
                                                     "detail": refusal.detail, **facts})
    wait_for(lambda: threading.active_count() <= threads_before, what="the watchdog thread ends", timeout=5)

    state["on"] = False  # the next attempt, same device, same cache: it goes on as normal
    offer = _source(tmp_path, server, DEADLINE_ONLY).find()
    assert offer is not None and offer.version == "0.2.0"


def test_metadata_below_the_floor_is_abandoned_before_its_deadline(tmp_path, repo, serve):
    handler, _state = dripping("/timestamp.json")
    server = serve(handler)
    refusal, took = _refused(_source(tmp_path, server, FLOOR).find)
    assert refusal.problem == "too_slow" and refusal.facts["limit"] == "min_rate", refusal
    assert 1.5 <= took <= 5, took  # floor checked from 1.5 s; the deadline would be 17 s
    assert "below the floor of 1000 bytes/s" in refusal.detail


def test_dripped_release_archive_is_abandoned_and_nothing_is_kept(tmp_path, repo, serve):
    archive = _publish(tmp_path, repo)
    handler, state = dripping(".tar.gz")
    server = serve(handler)
    # the floor (200 bytes/s over 1 s, from 1.5 s on) well before the deadline (0.5 s + length / 200)
    assert archive.stat().st_size > 500  # a deadline of 3 s or more
    limits = {"download_allowance_s": 0.5, "download_min_rate": 200.0, "download_rate_window_s": 1.0}
    source = _source(tmp_path, server, limits)
    offer = source.find()  # metadata comes at full speed
    dest = tmp_path / "dl" / "edge-0.2.0.tar.gz"
    refusal, took = _refused(lambda: source.download(offer, dest))
    assert refusal.problem == "too_slow" and refusal.facts["role"] == "target", refusal
    assert refusal.facts["limit"] == "min_rate" and refusal.facts["url"].endswith(".tar.gz")
    assert took <= 4.5, took  # the floor, from 1.5 s on; the deadline is 5 s
    assert not dest.exists()
    state["on"] = False
    assert source.download(offer, dest).read_bytes() == archive.read_bytes()


def test_a_repository_served_normally_is_not_cut_by_tight_limits(tmp_path, repo, serve):
    """Positive control: the limits of the attacks above, a repository that answers at once."""
    archive = _publish(tmp_path, repo)
    server = serve()
    for limits, cache in ((DEADLINE_ONLY, "a"), (FLOOR, "b")):
        source = _source(tmp_path, server, limits, cache)
        offer = source.find()
        assert offer.version == "0.2.0"
        assert source.download(offer, tmp_path / cache / "dl.tar.gz").read_bytes() == archive.read_bytes()


def test_daemon_reports_a_dripping_channel_and_updates_once_it_stops(tmp_path, repo, serve, edge_daemon):
    """The real daemon: the stalled check is an alarm naming the limit, nothing is installed,
    the daemon keeps running, and a later check on the normal schedule installs the release."""
    _publish(tmp_path, repo, device_class="tablet")
    handler, state = dripping("/timestamp.json")
    server = serve(handler)
    root = tmp_path / "root"
    base_install(root)
    config = {"device_id": "dev-1", "site": "site-1", "role": "tablet", "logging": {"format": "json"},
              "update": {"metadata_url": f"{server.url}/metadata/", "targets_url": f"{server.url}/targets/",
                         "trusted_root": str(tmp_path / "tuf-root.json"), "install_root": str(root),
                         "check_interval_s": 1, "python": sys.executable, **DEADLINE_ONLY}}
    daemon = edge_daemon(config)
    refused = wait_for(lambda: events(daemon.state_dir, "update.refused"), what="update.refused", timeout=15)[0]
    payload = refused["payload"]
    assert refused["priority"] == "alarm" and payload["problem"] == "too_slow", payload
    assert payload["limit"] == "deadline" and payload["role"] == "timestamp"
    assert payload["url"].endswith("/metadata/timestamp.json") and payload["elapsed_s"] < TIMESTAMP_DEADLINE_S + 1
    EVENT_PAYLOADS["update.refused"].model_validate(payload)
    assert boot.linked_version(root) is None and not (root / "opt/edge/releases/0.2.0").exists()
    assert daemon.running
    # the status entry, from the running daemon (its control socket answers meanwhile)
    status = json.loads(daemon.cli("update", "status", "--json", check=True).stdout)
    assert status["refusal"]["problem"] == "too_slow" and status["refusal"]["limit"] == "deadline"
    assert "abandoned after" in status["refusal"]["detail"]
    assert status["refusal_in_force"] is True
    _engineer_sees_the_stall(daemon)

    state["on"] = False
    wait_for(lambda: events(daemon.state_dir, "update.installed"), what="update.installed", timeout=15)
    assert (root / "opt/edge/releases/0.2.0").exists()
    assert len(events(daemon.state_dir, "update.refused")) == 1  # one alarm, not one per check


def _engineer_sees_the_stall(daemon) -> None:
    """From the text: updates are stalled, by a slow link, and the setting that fixes it. `edge
    status` said 'update status=ok' and `edge doctor` nothing; `edge update status` said
    'checked: never' as if no check had been tried."""
    update = daemon.cli("update", "status")
    assert "checked:   never completed (every try so far was refused: below)" in update.stdout, update.stdout
    assert "refused:   too_slow at " in update.stdout
    action = next(line for line in update.stdout.splitlines() if line.startswith("action:"))
    assert "updates STALLED" in action and "lower [update] download_min_rate (now 8000 bytes/s" in action
    status = daemon.cli("status").stdout
    assert "update  status=degraded" in status and "updates STALLED" in status, status
    assert "download_min_rate" in status and "None" not in status
    doctor = daemon.cli("doctor", "--only", "components", "--json")
    assert doctor.returncode == 1
    failed = [c for c in json.loads(doctor.stdout)["checks"] if not c["ok"]]
    assert [c["target"] for c in failed] == ["update"] and "download_min_rate" in failed[0]["detail"], failed
