"""Limits validated where they bite: every bad limit of issue 18 stops `edge run` with exit 78
and one clear line (never a traceback, never exit 1 that systemd restarts forever), and
`edge config check` says the same; the broker's maximum packet size caps the batches."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edge.limits import state_dir_problem
from edge.testing import dump_toml

BASE = {"device_id": "gate-1", "site": "site-a", "role": "gate",
        "drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": 2.0}]}

# what is wrong -> (config changes, fragments of the one line)
BAD_LIMITS = {
    "rate_inf": ({"drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": float("inf")}]},
                 ["drivers[0] (hb).rate: got inf"]),
    "rate_nan": ({"drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": float("nan")}]},
                 ["drivers[0] (hb).rate: got nan"]),
    "store_max_bytes_1e15": ({"store": {"max_bytes": 1e15}}, ["store.max_bytes: got 1000000000000000.0", "less than or equal"]),
    "retention_hours_inf": ({"store": {"retention_hours": float("inf")}}, ["store.retention_hours: got inf"]),
    "batch_bytes_over_mqtt_packet": ({"mqtt": {"batch_max_bytes": 2**30}},
                                     ["mqtt.batch_max_bytes: got 1073741824", "268435455"]),
    "session_expiry_2_40": ({"mqtt": {"session_expiry_s": 2**40}},
                            ["mqtt.session_expiry_s: got 1099511627776", "4294967295"]),
    "backoff_nan": ({"supervisor": {"backoff_max_s": float("nan")}}, ["supervisor.backoff_max_s: got nan"]),
    "clock_skew_inf": ({"trust": {"clock_skew_s": float("inf")}}, ["trust.clock_skew_s: got inf"]),
}


def _edge(tmp_path: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "edge.toml"
    path.write_text(dump_toml(config))  # repr(inf) is TOML's inf
    return subprocess.run([sys.executable, "-m", "edge", "--config", str(path), *args],
                          capture_output=True, text=True, timeout=60)


def _assert_one_line_78(proc: subprocess.CompletedProcess, fragments: list[str]) -> None:
    assert proc.returncode == 78, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("config error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize("case", sorted(BAD_LIMITS))
def test_each_bad_limit_stops_edge_run_with_78_and_one_line(tmp_path, case):
    changes, fragments = BAD_LIMITS[case]
    config = {**BASE, "state_dir": str(tmp_path / "state"), **changes}
    _assert_one_line_78(_edge(tmp_path, config, "run"), fragments)
    assert not (tmp_path / "state").exists(), "nothing may start on a bad limit"
    _assert_one_line_78(_edge(tmp_path, config, "config", "check"), fragments)


def _state_dir_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {"is_a_file": (a_file, "exists but is not a folder"),
            "under_a_file": (a_file / "state", f"cannot be created: {a_file} is a file, not a folder"),
            "relative": (Path("relative/state"), "must be an absolute path")}


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file"])
def test_a_state_dir_that_is_not_a_folder_exits_78_naming_the_path(tmp_path, case):
    path, why = _state_dir_cases(tmp_path)[case]
    config = {**BASE, "state_dir": str(path)}
    for args in (("run",), ("config", "check")):
        _assert_one_line_78(_edge(tmp_path, config, *args), [f"state_dir: got '{path}'", why])


def test_a_read_only_state_dir_exits_78(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        for state in (mnt, mnt / "state"):
            config = {**BASE, "state_dir": str(state)}
            for args in (("run",), ("config", "check")):
                _assert_one_line_78(_edge(tmp_path, config, *args), [f"state_dir: got '{state}'", "read-only"])
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_state_dir_the_service_user_cannot_write_is_named(tmp_path):
    """As the unprivileged user the service runs as (nobody here), in a forked child: the
    check must see what that user may do, not what root may."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    top = Path(tempfile.mkdtemp(prefix="edge-state-"))  # tmp_path's parents are 0700
    os.chmod(top, 0o755)
    try:
        state = top / "state"
        state.mkdir(mode=0o755)
        assert _as_nobody(state).startswith("is not writable (permission denied for uid 65534)")
        os.chmod(top, 0o700)
        assert _as_nobody(state).startswith("cannot be reached: Permission denied")
    finally:
        shutil.rmtree(top)


def _as_nobody(state: Path) -> str:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become nobody, check, report through the pipe
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, (state_dir_problem(state) or "None").encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def test_state_dir_problem_accepts_a_writable_or_creatable_folder(tmp_path):
    assert state_dir_problem(tmp_path) is None
    assert state_dir_problem(tmp_path / "new" / "deeper") is None
    assert not (tmp_path / "new").exists(), "a check creates nothing"
    for path, why in _state_dir_cases(tmp_path).values():
        assert why in state_dir_problem(path)


def test_batches_are_clamped_to_the_brokers_maximum_packet_size(base_config, mosquitto_factory, edge_daemon,
                                                                 mqtt_collector):
    """mqtt.batch_max_bytes (256 KiB) above the broker's maximum packet size (8 KiB, announced in
    CONNACK): before, every batch closed the connection and nothing was delivered."""
    broker = mosquitto_factory(extra="max_packet_size 8192")
    broker.stop()  # a backlog first: the uplink then packs full-size batches
    cfg = {**base_config, "mqtt": {"brokers": [broker.uri], "batch_max_bytes": 256 * 1024,
                                   "backoff_max_s": 1.0},
           "drivers": [{"name": "hb", "kind": "sim.heartbeat", "rate": 0, "count": 3000,
                        "payload_bytes": 100, "priority": "normal"}]}
    daemon = edge_daemon(cfg)
    deadline = time.monotonic() + 60
    while _stored(daemon.state_dir) < 3000 and time.monotonic() < deadline:
        time.sleep(0.1)
    broker.start()
    collector = mqtt_collector(broker, "edge/v1/site-1/dev-1/events/#")
    collector.wait_for(lambda c: len({e["seq"] for e in c.events("sim.")}) >= 3000, timeout=60,
                       what="all 3000 events through an 8 KiB broker")
    assert max(len(m.payload) for m in collector.messages) <= 8192
    assert "mqtt_batch_bytes_clamped" in daemon.log_tail(200_000)


def _stored(state_dir: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0
