"""A store that knows its disk, on a real (small) file system made by the test.

The store's cap follows the free space of the tmpfs it lives on: telemetry goes
first, then normal events, alarms last, each drop counted in a
``system.store_pressure`` alarm. When something else fills the disk to the last
byte, commits fail for space: alarms are kept in memory and written when room
returns, the rest is counted, and nothing raises anything but ``StoreFull``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from edge.config import StoreSettings
from edge.errors import StoreFull, StoreNoSpace
from edge.events import make_event
from edge.store import Store


@pytest.fixture
def tmpfs(tmp_path):
    """An 8 MiB tmpfs mounted for this test (root only; skipped with the reason otherwise)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def ev(n: int, priority: str):
    return make_event(device="d", site="s", type=f"sim.{priority}", source="t", priority=priority,
                      payload={"n": n, "pad": "x" * 200})


def system(store: Store, type_: str) -> list[dict]:
    return [json.loads(body)["payload"] for _s, body, _a in store.tail(100_000, type_glob=type_)]


def fill(path: Path) -> None:
    """Write zeros until the file system refuses (ENOSPC)."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_the_cap_follows_the_disk_telemetry_first_alarms_kept(tmpfs):
    store = Store(tmpfs / "state", device="d", site="s", settings=StoreSettings())  # max_bytes 256 MiB
    outcome = {"stored": 0, "refused": 0, "no_space": 0}
    alarms = 0
    try:
        for i in range(12_000):  # ~5 MiB of events into an 8 MiB disk, with no broker draining it
            priority = "alarm" if i % 100 == 0 else ("normal" if i % 4 == 0 else "telemetry")
            try:
                store.append(ev(i, priority))
                outcome["stored"] += 1
                alarms += priority == "alarm"
            except StoreNoSpace:
                outcome["no_space"] += 1
            except StoreFull:
                outcome["refused"] += 1
        stats = store.stats()
        kept_alarms = len(store.tail(100_000, type_glob="sim.alarm"))
        pressure = system(store, "system.store_pressure")
    finally:
        store.close()
    assert outcome["no_space"] == 0, "the cap must stop the store before the disk does"
    assert alarms == 120 and kept_alarms == 120, "every alarm is stored, none dropped"
    assert stats["dropped"]["telemetry"] > 0 and stats["dropped"]["alarm"] == 0
    assert pressure and pressure[0]["reason"] == "disk" and pressure[0]["cap_bytes"] < 8 * 1024 * 1024
    assert pressure[-1]["dropped"]["telemetry"] > 0
    st = os.statvfs(tmpfs)
    assert st.f_bavail * st.f_frsize > 0, "the disk was never filled to the last byte"


def test_a_disk_filled_by_someone_else_keeps_alarms_in_memory_until_room_returns(tmpfs):
    store = Store(tmpfs / "state", device="d", site="s", settings=StoreSettings())
    try:
        for i in range(200):
            store.append(ev(i, "telemetry"))
        fill(tmpfs / "filler")
        errors = []
        for i in range(300):  # enough to use up the released reserve as well
            priority = "alarm" if i % 10 == 0 else "normal"
            try:
                store.append(ev(1000 + i, priority))
            except StoreFull as exc:
                errors.append((priority, exc))
        assert errors, "the disk is full: some appends must fail"
        assert all(isinstance(e, StoreNoSpace) or p != "alarm" for p, e in errors)
        kept = [e for p, e in errors if p == "alarm"]
        assert all("kept in memory" in str(e) for e in kept)
        stored_before = {json.loads(b)["payload"]["n"] for _s, b, _a in store.tail(100_000, type_glob="sim.alarm")}

        (tmpfs / "filler").unlink()  # room again: the writer retries on its own within seconds
        deadline = time.monotonic() + 10
        ended = []
        while time.monotonic() < deadline and not ended:
            ended = [p for p in system(store, "system.store_pressure") if p["state"] == "ended"]
            time.sleep(0.1)
        alarms = {json.loads(b)["payload"]["n"] for _s, b, _a in store.tail(100_000, type_glob="sim.alarm")}
    finally:
        store.close()
    assert alarms == {1000 + i for i in range(0, 300, 10)}, "every alarm stored, kept ones after the disk freed"
    assert len(alarms) > len(stored_before)
    assert ended, "the pressure report is written once there is room"
    report = ended[-1]
    assert report["failed_commits"]["alarm"] == len(kept)
    assert report["failed_commits"]["normal"] == sum(1 for p, _e in errors if p == "normal")
    assert report["alarms_kept_in_memory"] == 0
