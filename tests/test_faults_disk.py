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
from edge.contract import EVENT_PAYLOADS
from edge.errors import StoreFull, StoreNoSpace
from edge.events import make_event
from edge.store import Store
from edge.testing.wait import wait_for


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
    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        try:
            while f.write(b"\0" * 65536):
                pass
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


# -- the daemon on a full disk, with a real broker -------------------------------------------


def _status(daemon) -> dict:
    out = daemon.cli("status", "--json")
    return json.loads(out.stdout)


def _drivers(daemon) -> dict:
    return _status(daemon)["daemon"]["drivers"]


def _head(state_dir: Path) -> int:
    import sqlite3

    db = sqlite3.connect(f"file:{state_dir / 'events.db'}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    finally:
        db.close()


def _dropped(collector) -> set[int]:
    return {seq for e in collector.events("system.events_dropped")
            for lo, hi in e["payload"]["seqs"] for seq in range(lo, hi + 1)}


@pytest.mark.slow
def test_full_disk_under_load_loses_no_alarm_records_acks_and_reports(tmpfs, base_config, mosquitto,
                                                                       edge_daemon, mqtt_collector):
    cfg = {**base_config, "state_dir": str(tmpfs / "state"),
           "mqtt": {"brokers": [mosquitto.uri], "backoff_min_s": 0.2, "backoff_max_s": 2.0},
           "drivers": [{"name": "tele", "kind": "sim.heartbeat", "rate": 200, "payload_bytes": 100},
                       {"name": "alarm", "kind": "sim.heartbeat", "rate": 4, "priority": "alarm",
                        "event_type": "sim.alarm"}]}
    collector = mqtt_collector(mosquitto, "edge/v1/site-1/dev-1/events/#", session=True)
    mosquitto.stop()  # a backlog first, so that many acks arrive while the disk is full
    daemon = edge_daemon(cfg)
    backlog = wait_for(lambda: (h := _head(daemon.state_dir)) >= 800 and h, 30, "a backlog of 800 events")

    fill(tmpfs / "filler")
    # Commits fail from here on (any room left in the WAL file is used up first): the acks
    # that arrive next cannot be recorded either.
    wait_for(lambda: _drivers(daemon)["tele"]["refused"] > 0, 30, "a commit refused for space")
    mosquitto.start()
    # Acked by the broker, not recordable on this disk: kept in memory, not re-sent.
    live = wait_for(lambda: (s := _status(daemon))["daemon"]["components"]["mqtt"].get("acks_kept_in_memory")
                    and s, 45, "acks kept in memory")
    assert live["daemon"]["source"] == "control_socket"
    assert "not written" in wait_for(lambda: _status(daemon)["daemon"].get("stale", {}).get("why"), 20,
                                     "the status to say status.json is not being written")
    before = {n: d["sent"] + d["refused"] for n, d in _drivers(daemon).items()}
    mosquitto.stop()  # a reconnect while full: the uplink re-reads the outbox
    mosquitto.start()
    time.sleep(3)  # the disk stays full a little longer, under load
    during = _drivers(daemon)
    assert all(d["restarts"] == 0 and d["status"] == "ok" for d in during.values()), during
    assert during["tele"]["sent"] + during["tele"]["refused"] - before["tele"] >= 200, "the driver kept producing"

    (tmpfs / "filler").unlink()  # room again: everything catches up with no manual step
    ended = wait_for(lambda: [e for e in collector.events("system.store_pressure")
                           if e["payload"]["state"] == "ended"], 30, "the store_pressure report")
    report = ended[-1]["payload"]
    assert report["failed_commits"]["telemetry"] > 0 and report["alarms_kept_in_memory"] == 0
    for e in collector.events("system."):  # what central receives matches the published contract
        if e["type"] in EVENT_PAYLOADS:
            EVENT_PAYLOADS[e["type"]].model_validate(e["payload"])
    # Every ack recorded with no manual drain: nothing kept in memory, the outbox keeps up
    # (under 200 events/s some are always in flight).
    wait_for(lambda: (s := _status(daemon))["daemon"]["components"]["mqtt"]["acks_kept_in_memory"] == 0
             and s["outbox"]["pending"] < 500, 30, "every ack recorded")
    # Every backlog event reaches the broker but those the store reported dropped, by seq.
    missing = lambda: set(range(1, backlog + 1)) - _dropped(collector) - {e["seq"] for e in collector.events()}  # noqa: E731
    try:
        wait_for(lambda: not missing(), 10, "the backlog at the broker")
    except AssertionError:
        raise AssertionError(f"not delivered: {sorted(missing())[:20]}... of {backlog}; dropped {sorted(_dropped(collector))}") from None

    final = _drivers(daemon)["alarm"]
    made = final["sent"] + final["refused"]  # refused alarms were kept in memory, then stored
    alarms = {e["id"] for e in collector.events("sim.alarm")}
    assert len(alarms) >= made - 4, (len(alarms), made)  # at most one second still being sent
    received = {e["seq"] for e in collector.events()}
    both = sorted(_dropped(collector) & received)
    assert not both, f"seqs reported dropped were delivered: {both[:20]} ({len(both)})"
    copies = sum(1 for e in collector.events() if e["seq"] <= backlog)
    again = copies - len({seq for seq in received if seq <= backlog})
    assert again < backlog // 4, f"{again} of {backlog} backlog events sent again (a re-send storm)"
    # No part of the daemon failed for want of space (the birth's seal key is made at start).
    faults = [line for line in daemon.log_path.read_text().splitlines() if '"component_fault"' in line]
    assert not faults, faults[:3]


def test_status_says_it_is_stale_because_the_disk_is_full(tmpfs):
    """No control socket to ask (an older daemon, no permission): the old status.json is shown
    as stale, with the reason, never as the present."""
    from edge.cli._views import LightSettings, status_report, status_text

    state = tmpfs / "state"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({
        "running": True, "pid": os.getpid(), "started_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:05:00+00:00", "drivers": {}, "components": {}}))
    fill(tmpfs / "filler")
    settings = LightSettings()
    settings.device_id, settings.site, settings.role, settings.state_dir = "d", "s", "gate", state
    report = status_report(settings)
    assert report["daemon"]["source"] == "status_file"
    assert "disk is full" in report["daemon"]["stale"]["why"]
    assert "(stale): the daemon could not rewrite status.json: the disk is full" in status_text(report)


def test_the_control_socket_answers_status_from_memory(tmp_path):
    from edge.cli._state import live_status
    from edge.commands.local import ControlServer

    live = {"running": True, "pid": os.getpid(), "status_file": {"written": False, "error": "No space left",
                                                                 "since": "2026-12-07T05:00:00+00:00"}}
    server = ControlServer(tmp_path, submit=None, status=lambda: dict(live))
    server.start()
    try:
        got = live_status(tmp_path)
    finally:
        server.stop()
    assert got == {**live, "source": "control_socket"}
    assert live_status(tmp_path) is None, "no daemon: the caller falls back to status.json"


@pytest.mark.slow
def test_the_issues_full_disk_store_fills_its_own_small_disk_with_no_broker(tmpfs, base_config, edge_daemon):
    """The set-up the issue measured: state on an 8 MiB tmpfs, broker down, telemetry flat out
    plus alarms. Before: each failed append crashed the driver (back-off up to 54 s), no alarm
    was kept, no drop counted. Now the cap follows the disk: telemetry goes, alarms stay."""
    cfg = {**base_config, "state_dir": str(tmpfs / "state"),
           "mqtt": {"brokers": ["mqtt://127.0.0.1:1"], "backoff_max_s": 2.0},  # nothing listens
           "drivers": [{"name": "tele", "kind": "sim.heartbeat", "rate": 2000, "payload_bytes": 100},
                       {"name": "alarm", "kind": "sim.heartbeat", "rate": 4, "priority": "alarm",
                        "event_type": "sim.alarm"}]}
    daemon = edge_daemon(cfg)
    dropped = lambda: _status(daemon)["outbox"]["dropped"]["telemetry"]  # noqa: E731
    short = wait_for(lambda: (n := dropped()) > 2000 and n, 60, "the disk to run short")
    wait_for(lambda: dropped() > short + 2000, 60, "2000 more drops under pressure")  # and some more
    status = _status(daemon)
    drivers = status["daemon"]["drivers"]
    assert all(d["restarts"] == 0 for d in drivers.values()), drivers
    daemon.stop()
    log = daemon.log_path.read_text()
    assert "store_commit_failed" not in log, "the cap must keep the store off a full disk"
    import sqlite3

    db = sqlite3.connect(f"file:{daemon.state_dir / 'events.db'}?mode=ro", uri=True)
    try:
        alarms = db.execute("SELECT COUNT(*) FROM events WHERE type = 'sim.alarm'").fetchone()[0]
        reports = [json.loads(b)["payload"] for (b,) in db.execute(
            "SELECT body FROM events WHERE type = 'system.store_pressure' ORDER BY seq")]
        drop_records = db.execute("SELECT COUNT(*) FROM dropped").fetchone()[0]
    finally:
        db.close()
    final = json.loads(daemon.cli("status", "--json").stdout)["outbox"]
    assert drivers["alarm"]["refused"] == 0, "no alarm refused"
    assert alarms >= drivers["alarm"]["sent"], "every alarm made is stored (more came after the sample)"
    assert reports and reports[0]["reason"] == "disk" and reports[-1]["dropped"]["telemetry"] > 0
    assert drop_records < final["dropped"]["telemetry"] // 20, "drops are recorded as runs"


def test_stats_and_status_show_the_cap_the_disk_sets(tmpfs):
    from edge.cli._views import LightSettings, status_report, status_text

    store = Store(tmpfs / "state", device="d", site="s", settings=StoreSettings())  # max_bytes 256 MiB
    try:
        store.append(ev(0, "normal"))
        stats = store.stats()
    finally:
        store.close()
    assert stats["cap_bytes"] < 8 * 1024 * 1024 < stats["max_bytes"]
    settings = LightSettings()
    settings.device_id, settings.site, settings.role, settings.state_dir = "d", "s", "gate", tmpfs / "state"
    assert "free disk space caps it at" in status_text(status_report(settings))
