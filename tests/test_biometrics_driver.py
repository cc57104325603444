"""The camera.face driver in a real daemon: the worker process, events, restart after kill -9."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from drivers.camera.gallery import Gallery, Subject
from edge.store import StoreReader
from edge.testing.wait import wait_for
from tests._face_helpers import conforms, photo, template


def events(state_dir, prefix: str = "") -> list[dict]:
    reader = StoreReader(state_dir)
    try:
        rows = reader.tail(1000)
    finally:
        reader.close()
    out = [json.loads(body) for _, body, _ in rows]
    return [e for e in out if e["type"].startswith(prefix)]


@pytest.fixture
def lane_folder(tmp_path):
    """A camera's view, frame by frame: someone walks up, leaves, two people, an empty lane."""
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    black = np.zeros((480, 640, 3), np.uint8)
    seq = ["obama-720p", "obama-480p", None, None, "two_people", None, None, "rose_leslie_2", None]
    for i, name in enumerate(seq):
        target = folder / f"{i:03d}.jpg"
        if name is None:
            cv2.imwrite(str(target), black)
        else:
            shutil.copy(photo(name), target)
    return folder


def test_driver_runs_the_worker_and_emits_one_decision_per_approach(edge_daemon, base_config, lane_folder):
    state = base_config["state_dir"]
    base_config["drivers"] = [{"name": "lane1-face", "kind": "camera.face", "source": str(lane_folder),
                               "liveness": "none", "max_fps": 20}]
    g = Gallery(state)
    g.upsert(Subject("obama", "staff", [template("obama_1")]))
    g.close()
    daemon = edge_daemon(base_config)
    wait_for(lambda: len(events(state, "biometric.")) >= 3, what="three biometric decisions", timeout=60)
    assert daemon.stop() == 0  # the last frame (empty lane) was played: nothing else may come
    log = daemon.log_tail(100_000)
    assert "camera_liveness_off" in log  # a dangerous opt-in is logged at start
    # The worker's own lines (it carries no structlog) reach the daemon's JSON log under the driver
    loaded = [json.loads(line) for line in log.splitlines() if '"face_encoder_loaded"' in line]
    assert loaded and loaded[0]["driver"] == "lane1-face" and loaded[0]["process"] == "face_worker"
    assert loaded[0]["engine"] in ("numpy", "dlib") and loaded[0]["level"] == "info"
    got = events(state, "biometric.")
    assert [(e["type"], e["priority"]) for e in got] == [
        ("biometric.identified", "normal"), ("biometric.multiple_faces", "alarm"), ("biometric.unknown", "normal")]
    first = got[0]
    assert first["source"] == "lane1-face" and first["payload"]["subject_id"] == "obama"
    assert {"detect", "encode", "search"} <= set(first["payload"]["timings_ms"])
    for e in got:  # the published contract, which has no field for a template
        conforms(e["type"], e["payload"])


def test_worker_killed_is_recorded_and_restarted(edge_daemon, base_config, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    base_config["drivers"] = [{"name": "cam", "kind": "camera.face", "source": str(folder)}]
    base_config["supervisor"] = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0}
    daemon = edge_daemon(base_config)

    def worker_pids() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read()
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == daemon.proc.pid and b"drivers.camera.worker" in cmd:
                    pids.append(int(entry))
        return pids

    [first] = wait_for(worker_pids, what="the face worker", timeout=60)
    os.kill(first, signal.SIGKILL)
    # Under load a frame may find the worker gone first ("not running; being restarted"): the
    # fault that counts is the one that says the worker exited.
    faults = wait_for(lambda: [f for f in events(base_config["state_dir"], "system.driver_fault")
                               if "exited" in f["payload"]["error"]], what="a fault saying the worker exited", timeout=60)
    assert faults[0]["payload"]["driver"] == "cam"
    second = wait_for(lambda: [p for p in worker_pids() if p != first], what="a new worker", timeout=60)
    assert second and daemon.running
    assert daemon.stop() == 0
    wait_for(lambda: not os.path.exists(f"/proc/{second[0]}") or _zombie(second[0]), 10, "worker to exit")


def test_a_worker_gone_before_it_is_told_to_start_is_a_fault_with_its_exit_code(tmp_path, monkeypatch):
    """Killed between its start and the driver's first message (a race a field engineer hits
    as a kill during a restart): the fault says the worker exited, with its code."""
    import threading

    from drivers.camera import driver as camera
    from edge.driver import DriverContext
    from edge.errors import DriverError

    real_popen = subprocess.Popen

    def popen_then_killed(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        proc.kill()
        proc.wait()
        return proc

    monkeypatch.setattr(camera.subprocess, "Popen", popen_then_killed)
    ctx = DriverContext("cam", lambda *a: None, None, threading.Event())
    ctx.log = __import__("structlog").get_logger("test")
    config = camera.FaceCameraDriver.Config(name="cam", kind="camera.face", source=str(tmp_path),
                                            state_dir=tmp_path / "state")
    driver = camera.FaceCameraDriver(config, ctx)
    with pytest.raises(DriverError, match=r"face worker exited with code -9 before it started"):
        driver.run()
    driver.close()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_presented_booking_goes_to_the_worker_and_comes_back_as_a_decision(tmp_path):
    import threading

    from drivers.camera.driver import FaceCameraDriver
    from edge.driver import DriverContext
    from edge.errors import CommandError

    g = Gallery(tmp_path / "state")
    g.upsert(Subject("V-1", "visitor", [template("biden_1")], valid_until=time.time() + 3600))
    g.close()
    folder = tmp_path / "lane"
    folder.mkdir()
    shutil.copy(photo("biden_2"), folder / "0.jpg")
    emitted: list[tuple[str, dict, str]] = []
    got = threading.Event()

    def emit(type, payload, priority, source):
        emitted.append((type, payload, priority))
        got.set()

    stopping = threading.Event()
    ctx = DriverContext("lane2", emit, None, stopping)
    ctx.log = __import__("structlog").get_logger("test")
    config = FaceCameraDriver.Config(name="lane2", kind="camera.face", source=str(folder), loop=True,
                                     mode="verify", liveness="none", max_fps=5, state_dir=tmp_path / "state")
    driver = FaceCameraDriver(config, ctx)
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: driver.worker_pid, 60, "the worker to be ready")
        assert driver.health()["encoder"] == "numpy"  # a field engineer sees which engine encodes
        with pytest.raises(CommandError, match="subject_id"):
            driver.handle("verify", {})
        assert not got.wait(1.0)  # a verify-only lane decides nothing before a booking is shown
        assert driver.handle("verify", {"subject_id": "V-1", "booking_id": "BK-9"})["accepted"]
        assert got.wait(30)
        [(type_, payload, priority)] = emitted
        assert type_ == "biometric.verified" and payload["booking_id"] == "BK-9" and priority == "normal"
        conforms(type_, payload)
    finally:
        stopping.set()
        thread.join(10)
        driver.close()
    assert driver._proc is None


def test_the_worker_never_outlives_a_killed_daemon(edge_daemon, base_config, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    base_config["drivers"] = [{"name": "cam", "kind": "camera.face", "source": str(folder)}]
    daemon = edge_daemon(base_config)
    pid = daemon.proc.pid
    workers = wait_for(lambda: [int(p) for p in os.listdir("/proc") if p.isdigit() and _child_worker(int(p), pid)],
                       what="the face worker", timeout=60)
    daemon.kill()  # SIGKILL: the worker's stdin closes and it stops on its own
    wait_for(lambda: all(_zombie(w) for w in workers), 20, "the orphaned worker to exit")


def _child_worker(pid: int, parent: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return ppid == parent and b"drivers.camera.worker" in f.read()
    except (OSError, IndexError, ValueError):
        return False


def test_each_face_driver_finds_the_gallery_of_the_daemon_that_runs_it(tmp_path):
    """No module-level state_dir: two daemons in one process (two contexts) never share a gallery."""
    import threading

    from drivers.camera.driver import FaceCameraDriver
    from edge.driver import DriverContext
    from edge.errors import DriverError

    def driver(daemon_dir, **options):
        ctx = DriverContext("cam", lambda *a: None, None, threading.Event(), state_dir=daemon_dir)
        return FaceCameraDriver(FaceCameraDriver.Config(name="cam", kind="camera.face", source="x", **options), ctx)

    a, b = driver(tmp_path / "a"), driver(tmp_path / "b")
    assert (a._state_dir(), b._state_dir()) == (tmp_path / "a", tmp_path / "b")
    assert driver(tmp_path / "a", state_dir=tmp_path / "own")._state_dir() == tmp_path / "own"  # its option wins
    with pytest.raises(DriverError, match="no state_dir"):
        driver(None)._state_dir()


_WORKER_MODULES = """
import json, sys
from drivers.camera import worker
from drivers.camera._log import set_sink
set_sink(worker._log_to_driver)  # as worker.main() does
w = worker.Worker(sys.argv[1], {"source": sys.argv[2], "liveness": "none"})
decisions = w.lane.process(w.source.read(5.0))
print(json.dumps({"decided": [d.type for d in decisions],
                  "loaded": sorted(m for m in ("structlog", "rich", "asyncio", "cryptography") if m in sys.modules)}))
"""


def test_the_face_worker_loads_neither_structlog_nor_cryptography(tmp_path):
    """Each costs the worker about 8 MB resident (docs/performance.md, footprint --role gate): its
    log lines go to the driver, its gallery opens with libsodium (where the CPU has AES-GCM)."""
    from edge.atrest import sodium_available

    state, frames = tmp_path / "state", tmp_path / "frames"
    frames.mkdir()
    shutil.copy(photo("obama_2"), frames / "0.jpg")
    g = Gallery(state)
    g.upsert(Subject("obama", "staff", [template("obama_1")]))
    g.close()
    out = subprocess.run([sys.executable, "-c", _WORKER_MODULES, str(state), str(frames)], capture_output=True,
                         text=True, timeout=300, check=True).stdout.splitlines()
    logged = [json.loads(line) for line in out if line.startswith('{"op":"log"')]
    assert any(m["event"] == "face_encoder_loaded" for m in logged)  # to the driver, not to structlog
    result = json.loads(out[-1])
    assert result["decided"] == ["biometric.identified"]  # positive control: the whole path ran
    assert result["loaded"] == ([] if sodium_available() else ["cryptography"])
