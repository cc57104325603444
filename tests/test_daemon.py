"""`edge run` as systemd runs it: SIGTERM under full load, status while running and after,
and the field engineer's commands answering fast."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time

import pytest

from drivers.sim.heartbeat import read_confirmations
from edge.testing.wait import holds_within, wait_for

FULL_RATE = [
    {"name": "fast-a", "kind": "sim.heartbeat", "rate": 0, "event_type": "sim.fast_a"},
    {"name": "fast-b", "kind": "sim.heartbeat", "rate": 0, "priority": "normal", "payload_bytes": 500},
]


def _stored_ids(state_dir) -> set[str]:
    with sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM events")}


def test_sigterm_under_full_load_stops_within_10s_and_keeps_every_append(edge_daemon, base_config, tmp_path):
    confirm = tmp_path / "confirmed.txt"
    drivers = [dict(FULL_RATE[0], confirm_file=str(confirm)), FULL_RATE[1]]
    daemon = edge_daemon({**base_config, "drivers": drivers})
    wait_for(lambda: confirm.exists() and len(confirm.read_text()) >= 5_000, 30, "a few hundred appends confirmed")
    started = time.monotonic()
    code = daemon.stop(timeout=15)
    took = time.monotonic() - started
    assert code == 0, daemon.log_tail()
    assert took < 10, took

    confirmed = read_confirmations(confirm)
    assert len(confirmed) > 50
    assert set(confirmed) <= _stored_ids(daemon.state_dir)  # nothing acknowledged was lost

    log = [json.loads(line) for line in daemon.log_tail(20_000).splitlines() if line.startswith("{")]
    stopped = [e for e in log if e["event"] == "edge_stopped"]
    assert stopped and stopped[-1]["stuck_drivers"] == []
    assert daemon.cli("audit", "verify").returncode == 0

    status = daemon.cli("status", "--json")
    assert status.returncode == 3, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["daemon"]["running"] is False
    assert {d["status"] for d in report["daemon"]["drivers"].values()} == {"stopped"}
    text = daemon.cli("status")
    assert text.returncode == 3 and "NOT RUNNING" in text.stdout


def test_status_while_running_and_after_sigkill(edge_daemon, base_config):
    daemon = edge_daemon({**base_config, "drivers": [
        {"name": "beat", "kind": "sim.heartbeat", "rate": 20}]})
    deadline = time.monotonic() + 30
    while True:
        status = daemon.cli("status", "--json")
        report = json.loads(status.stdout)
        if report["outbox"].get("pending", 0) >= 5 or time.monotonic() > deadline:
            break
    assert status.returncode == 0, status.stderr
    assert report["daemon"]["running"] is True and report["daemon"]["pid"] == daemon.proc.pid
    assert report["daemon"]["drivers"]["beat"]["status"] == "ok"
    assert report["outbox"]["pending"] >= 5 and report["outbox"]["oldest_pending_age_s"] >= 0
    assert report["disk"]["free_bytes"] > 0
    text = daemon.cli("status")
    assert text.returncode == 0 and "daemon  running" in text.stdout and "beat" in text.stdout

    daemon.kill()  # the status file still says running: the CLI must notice the dead pid
    after = daemon.cli("status", "--json")
    assert after.returncode == 3 and json.loads(after.stdout)["daemon"]["running"] is False


def _timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall time and CPU time (user+sys) of one CLI process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


def test_status_and_tail_answer_in_under_300ms(edge_daemon, base_config):
    daemon = edge_daemon({**base_config, "drivers": [{"name": "beat", "kind": "sim.heartbeat", "rate": 1}]})
    for command in (["status"], ["events", "tail", "-n", "20"]):
        args = [sys.executable, "-m", "edge", "--config", str(daemon.config_path), *command]
        runs = [_timed(args) for _ in range(5)]
        for _wall, _cpu, proc in runs:
            assert proc.returncode == 0, proc.stderr
        best_wall, best_cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        # The best of five filters out other processes on this shared 2-core machine.
        assert best_wall < 0.3, f"{command}: {best_wall:.3f}s wall, {best_cpu:.3f}s CPU"
        assert best_cpu < 0.3


def test_fast_commands_import_nothing_heavy(base_config, tmp_path):
    """What keeps them fast on a slow device, independent of this machine's load."""
    from edge.store import Store
    from edge.testing.daemon import dump_toml

    Store(base_config["state_dir"], device="dev-1", site="site-1").close()
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml(base_config))
    heavy = {"pydantic", "pydantic_settings", "numpy", "cv2", "dlib", "paho", "sqlite_utils", "structlog",
             "cryptography", "click"}
    for command in (["status"], ["events", "tail", "-n", "5"], ["status", "--json"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edge", "--config", str(config),
                               *command], capture_output=True, text=True, timeout=30)
        assert proc.returncode in (0, 3), proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not imported & heavy, (command, imported & heavy)


STUCK_DRIVER = '''
import time
from edge.driver import Driver


class Stuck(Driver):
    """Blocked in a device read that never returns; ignores ctx.stopping."""

    def run(self):
        self.ctx.emit("stuck.started", {})
        while True:
            time.sleep(3600)
'''


def _third_party_plugin(root) -> dict[str, str]:
    """A real distribution on PYTHONPATH declaring an edge.drivers entry point, as a vendor's would."""
    (root / "stuck_vendor.py").write_text(STUCK_DRIVER)
    info = root / "stuck_vendor-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stuck-vendor\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[edge.drivers]\nvendor.stuck = stuck_vendor:Stuck\n")
    return {"PYTHONPATH": str(root)}


def test_sigterm_with_a_stuck_third_party_driver_exits_0_after_the_timeout(edge_daemon, base_config, tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    env = _third_party_plugin(plugin)
    config = {**base_config, "supervisor": {"stop_timeout_s": 1.0},
              "drivers": [{"name": "reader", "kind": "vendor.stuck"},
                          {"name": "beat", "kind": "sim.heartbeat", "rate": 50}]}
    daemon = edge_daemon(config, env=env)
    listed = json.loads(daemon.cli("drivers", "list", "--json").stdout)
    assert listed["kinds"]["vendor.stuck"] == "stuck_vendor:Stuck"
    assert holds_within(lambda: "stuck.started" in daemon.cli("events", "tail", "--type", "stuck.*").stdout, 20,
                        interval=0), daemon.log_tail()
    started = time.monotonic()
    assert daemon.stop(timeout=15) == 0
    took = time.monotonic() - started
    assert 0.9 <= took < 10, took
    log = [json.loads(line) for line in daemon.log_tail(50_000).splitlines() if line.startswith("{")]
    assert [e["driver"] for e in log if e["event"] == "driver_stuck_on_stop"] == ["reader"]
    assert [e for e in log if e["event"] == "edge_stopped"][-1]["stuck_drivers"] == ["reader"]
    assert daemon.cli("audit", "verify").returncode == 0


def test_a_second_daemon_on_the_same_state_dir_is_refused(edge_daemon, base_config):
    """An engineer typing `edge run` while the service runs must not fork seq and the chain."""
    first = edge_daemon({**base_config, "drivers": [{"name": "beat", "kind": "sim.heartbeat", "rate": 50}]})
    second = subprocess.run([sys.executable, "-m", "edge", "--config", str(first.config_path), "run"],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"is in use by another process (pid {first.proc.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.running
    assert first.stop() == 0
    assert first.cli("audit", "verify").returncode == 0


def test_status_file_survives_a_broken_component(tmp_path):
    """A component whose status() raises must not stop the daemon loop or hide the rest."""
    from edge.config import Settings
    from edge.daemon import Daemon

    class Broken:
        name = "broken"

        def status(self):
            raise RuntimeError("bug in status")

    class Fine:
        name = "fine"

        def status(self):
            return {"queued": 0, "since": time}  # not JSON: written with str()

    daemon = Daemon(Settings(device_id="d", site="s", role="gate", state_dir=tmp_path))
    daemon.components = [Broken(), Fine()]
    daemon.write_status()
    doc = json.loads((tmp_path / "status.json").read_text())
    assert doc["components"]["broken"] == {"error": "RuntimeError: bug in status"}
    assert doc["components"]["fine"]["queued"] == 0


def test_systemd_notify_ready_watchdog_and_stopping(base_config, tmp_path):
    """Type=notify: READY=1 after start-up, WATCHDOG=1 at half of WatchdogSec, STOPPING=1 on SIGTERM."""
    import signal
    import socket

    from edge.testing.daemon import dump_toml

    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({**base_config, "drivers": [{"name": "beat", "kind": "sim.heartbeat"}]}))
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen([sys.executable, "-m", "edge", "--config", str(config), "run"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        messages: list[tuple[float, str]] = []
        while sum(m == "WATCHDOG=1" for _t, m in messages) < 4:
            messages.append((time.monotonic(), sock.recv(4096).decode()))
        names = [m for _t, m in messages]
        assert names[0] == "READY=1", names
        pings = [t for t, m in messages if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 1.8, gaps  # about every 1 s (half of WatchdogSec=2s), never late
        proc.send_signal(signal.SIGTERM)
        while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
            pass
        assert message == "STOPPING=1"
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        sock.close()


@pytest.mark.parametrize("role, loads_verifier", [("tablet", False), ("gate", True)])
def test_the_verifier_loads_at_start_only_on_a_gate_and_cryptography_on_neither(
        edge_daemon, base_config, tmp_path, role, loads_verifier):
    """Signatures are verified with libsodium: a tablet loads it when a signed document arrives,
    a gate at start so that a grant never waits; neither loads cryptography (about 9 MB resident)."""
    from edge import signing

    _, pub, _ = signing.generate_keypair(tmp_path / "keys", "central")
    base_config.update(role=role, trust={"central_keys": [str(pub)]},
                       drivers=[{"name": "hb", "kind": "sim.heartbeat", "rate": 1.0}])
    daemon = edge_daemon(base_config, env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {line.split("|")[-1].strip() for line in daemon.log_tail(10**7).splitlines()
                if line.startswith("import time:")}
    assert "edge.daemon" in imported  # the import log was captured
    assert ("nacl.signing" in imported) is loads_verifier
    assert "cryptography" not in imported
