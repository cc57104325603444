"""The size cap: acked history goes first, then pending telemetry oldest first, then normal;
alarms are never dropped; every drop is counted and reported; the audit chain survives."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge.config import StoreSettings
from edge.errors import StoreFull
from edge.events import make_event
from edge.store import Store

MAX = 64 * 1024  # the smallest cap the config allows


def ev(n: int, priority: str):
    return make_event(device="dev-1", site="site-1", type=f"sim.{priority}", source="test",
                      priority=priority, payload={"n": n, "pad": "p" * 400})


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "state", device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
    yield store
    store.close()


def rows(store: Store) -> dict[int, tuple[str, str, bool]]:
    """seq -> (type, priority, acked) of every stored row."""
    with sqlite3.connect(store.path) as conn:
        return {seq: (type_, ("alarm", "normal", "telemetry")[prio], acked is not None)
                for seq, type_, prio, acked in conn.execute("SELECT seq, type, priority, acked_at FROM events")}


def system_events(store: Store, type_: str) -> list[dict]:
    return [json.loads(body) for _s, body, _a in store.tail(100_000, type_glob=type_)]


def test_eviction_order_acked_then_telemetry_then_normal_never_alarms(store):
    kinds: dict[int, str] = {}
    for i in range(20):
        for prio in ("telemetry", "normal", "alarm") if i % 4 == 0 else ("telemetry", "normal"):
            kinds[store.append(ev(i, prio)).seq] = prio
    acked = [s for s, p in kinds.items() if p != "alarm"][:8]
    store.mark_acked(acked)
    alarms = {s for s, p in kinds.items() if p == "alarm"}

    # Keep appending normal events: the store must make room in the documented order.
    order: list[tuple[int, str]] = []  # (seq, why it went) in the order rows disappeared
    present = set(rows(store))
    for i in range(120):
        kinds[store.append(ev(100 + i, "normal")).seq] = "normal"
        now = set(rows(store))
        gone = [(seq, "acked" if seq in acked else kinds[seq]) for seq in present - now]
        rank = {"acked": 0, "telemetry": 1, "normal": 2, "alarm": 3}
        order += sorted(gone, key=lambda g: (rank[g[1]], g[0]))  # one append may free several classes
        if any(why == "normal" for _s, why in gone):  # normal goes only once no telemetry is left
            assert not [q for q in now if kinds.get(q) == "telemetry" and q not in acked]
        present = now

    classes = [why for _seq, why in order]
    assert classes, "the cap was never reached"
    # Runs, in this order: every acked row, then pending telemetry, then pending normal.
    first = {c: classes.index(c) for c in set(classes)}
    last = {c: len(classes) - 1 - classes[::-1].index(c) for c in set(classes)}
    assert last["acked"] < first["telemetry"] and last["telemetry"] < first["normal"]
    assert sorted(s for s, c in order if c == "acked") == sorted(acked)
    for cls in ("telemetry", "normal"):
        seqs = [s for s, c in order if c == cls]
        assert seqs == sorted(seqs), f"{cls} not dropped oldest first"
    assert "alarm" not in classes
    assert alarms <= set(rows(store))  # every alarm is still there
    stats = store.stats()
    assert stats["purged_acked"] == len(acked)
    assert stats["dropped"] == {"alarm": 0, "telemetry": classes.count("telemetry"),
                                "normal": classes.count("normal")}
    assert stats["bytes_used"] <= MAX
    assert store.verify().ok


def test_full_store_refuses_non_alarms_keeps_alarms_and_reports_once(store):
    for i in range(200):  # alarms alone past the cap: nothing is evictable, nothing may be lost
        store.append(ev(i, "alarm"))
    with pytest.raises(StoreFull, match="telemetry events are refused"):
        store.append(ev(0, "telemetry"))
    with pytest.raises(StoreFull, match="normal events are refused"):
        store.append(ev(0, "normal"))
    alarm = store.append(ev(999, "alarm"))  # still accepted, past the cap
    assert alarm.seq is not None

    full = system_events(store, "system.store_full")
    assert len(full) == 1, "one alarm per full episode, not one per refused append"
    assert full[0]["priority"] == "alarm" and full[0]["payload"]["max_bytes"] == MAX
    stats = store.stats()
    assert stats["full"] is True and stats["refused"] == 2
    assert stats["dropped"]["alarm"] == 0
    assert len([r for r in rows(store).values() if r[0] == "sim.alarm"]) == 201
    assert store.verify().ok


def test_every_drop_is_counted_and_reported_without_flooding(tmp_path):
    store = Store(tmp_path / "state", device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
    refused = 0
    for i in range(600):
        prio = ("telemetry", "normal", "alarm", "telemetry")[i % 4]
        try:
            store.append(ev(i, prio))
        except StoreFull:
            refused += 1
    stats = store.stats()
    dropped = stats["dropped"]["telemetry"] + stats["dropped"]["normal"]
    assert dropped > 100 and stats["dropped"]["alarm"] == 0
    assert stats["refused"] == refused
    store.close()  # reports what the rate limit held back

    store = Store(tmp_path / "state", device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
    try:
        reports = system_events(store, "system.events_dropped")
        assert 1 <= len(reports) <= 3, "drop reports are alarms: they must not flood a full store"
        assert all(r["priority"] == "alarm" for r in reports)
        assert sum(r["payload"]["count"] for r in reports) == dropped
        by_prio: dict[str, int] = {}
        for r in reports:
            for prio, n in r["payload"]["by_priority"].items():
                by_prio[prio] = by_prio.get(prio, 0) + n
        assert by_prio == {p: n for p, n in stats["dropped"].items() if n}
        assert reports[-1]["payload"]["dropped_total"] == {"normal": stats["dropped"]["normal"],
                                                          "telemetry": stats["dropped"]["telemetry"]}
        assert len(system_events(store, "system.store_full")) <= 2
        assert store.verify().ok
    finally:
        store.close()


def test_full_episode_ends_when_the_uplink_drains(store):
    for i in range(120):
        store.append(ev(i, "normal"))
    # Fill with alarms until telemetry is refused.
    for i in range(300):
        store.append(ev(i, "alarm"))
    with pytest.raises(StoreFull):
        store.append(ev(0, "telemetry"))
    assert store.stats()["full"]
    # The broker acknowledges everything: acked history is evictable again.
    store.mark_acked([r.seq for r in store.outbox_next(10_000)])
    assert store.append(ev(1, "telemetry")).seq is not None
    assert store.stats()["full"] is False
    assert store.verify().ok


def test_heartbeat_driver_keeps_beating_when_refused(tmp_path):
    """A driver gets StoreFull, counts it and carries on; the supervisor sees no fault."""
    from edge.config import DriverEntry, SupervisorSettings
    from edge.supervisor import Supervisor

    store = Store(tmp_path / "state", device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
    try:
        for i in range(200):
            store.append(ev(i, "alarm"))

        def emit(type, payload, priority, source):
            return store.append(make_event(device="dev-1", site="site-1", type=type, source=source,
                                           payload=payload, priority=priority))

        sup = Supervisor([DriverEntry(name="hb", kind="sim.heartbeat", rate=0, count=50)], emit,
                         SupervisorSettings())
        sup.start()
        import time

        deadline = time.monotonic() + 30
        while sup.health()["hb"].get("refused", 0) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        health = sup.health()["hb"]
        sup.stop()
        assert health["refused"] >= 50 and health["status"] == "ok" and health["restarts"] == 0
    finally:
        store.close()


KILL_INSIDE_THE_RATE_LIMIT = """
import os, signal, sys
from edge.config import StoreSettings
from edge.errors import StoreFull
from edge.events import make_event
from edge.store import Store

store = Store(sys.argv[1], device="dev-1", site="site-1", settings=StoreSettings(max_bytes=64 * 1024))
for i in range(400):
    try:
        store.append(make_event(device="dev-1", site="site-1", type="sim.telemetry", source="t",
                                priority="telemetry", payload={"n": i, "pad": "p" * 400}))
    except StoreFull:
        pass
os.kill(os.getpid(), signal.SIGKILL)  # drops after the first report are still unreported
"""


def test_drops_not_yet_reported_when_the_process_died_are_reported_after_restart(tmp_path):
    import subprocess
    import sys

    state = tmp_path / "state"
    proc = subprocess.run([sys.executable, "-c", KILL_INSIDE_THE_RATE_LIMIT, str(state)],
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    store = Store(state, device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
    try:
        dropped = store.stats()["dropped"]["telemetry"]
        before = sum(r["payload"]["count"] for r in system_events(store, "system.events_dropped"))
        assert 0 < before < dropped  # the first drop was reported at once, the rest held back
        store.run_maintenance()
        store.close()
        store = Store(state, device="dev-1", site="site-1", settings=StoreSettings(max_bytes=MAX))
        reports = system_events(store, "system.events_dropped")
        assert sum(r["payload"]["count"] for r in reports) == dropped
    finally:
        store.close()
