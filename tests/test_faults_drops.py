"""Drop reports that are exact and prompt (issue 18, item 6).

``system.events_dropped`` names, as [lo, hi] ranges, exactly the seqs that were
dropped before leaving the device: never an acked one, never one the uplink has in
flight or knows delivered; and it is written when the drop happens (the first at
once, later ones within the report interval), not only at a graceful stop.
"""

from __future__ import annotations

import json
import time

import pytest

import edge.store._space as space_module
from edge.config import StoreSettings
from edge.contract import EventsDroppedPayload
from edge.errors import StoreFull
from edge.events import make_event
from edge.store import Store
from edge.store._space import protected_sql

MAX = 64 * 1024


def ev(n: int, priority: str):
    return make_event(device="d", site="s", type=f"sim.{priority}", source="t", priority=priority,
                      payload={"n": n, "pad": "p" * 400})


def reports(store: Store) -> list[dict]:
    return [json.loads(b)["payload"] for _s, b, _a in store.tail(100_000, type_glob="system.events_dropped")]


def named(payloads: list[dict]) -> set[int]:
    return {seq for p in payloads for lo, hi in p["seqs"] for seq in range(lo, hi + 1)}


def test_the_report_names_exactly_the_seqs_never_sent(tmp_path):
    store = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(max_bytes=MAX))
    kinds: dict[int, str] = {}
    try:
        for i in range(60):
            prio = ("telemetry", "normal", "telemetry", "alarm")[i % 4]
            kinds[store.append(ev(i, prio)).seq] = prio
        acked = [s for s in kinds if s % 5 == 0 and kinds[s] != "alarm"]  # delivered, scattered
        store.mark_acked(acked)
        in_flight = (20, 30)  # the uplink has these on the wire: they may be delivered any moment
        store.protected = lambda: [in_flight]
        for i in range(200):
            try:
                kinds[store.append(ev(100 + i, "normal")).seq] = "normal"
            except StoreFull:
                pass
        store.close()  # anything the interval held back is reported
        store = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(max_bytes=MAX))
        stored = {s for s, _b, _a in store.tail(100_000)}
        payloads = reports(store)
        stats = store.stats()
    finally:
        store.close()
    gone = {s for s, k in kinds.items() if s not in stored and k != "alarm"}
    never_sent = gone - set(acked)
    assert named(payloads) == never_sent, "exactly the seqs that never left the device"
    assert sum(p["count"] for p in payloads) == len(never_sent) == stats["dropped"]["telemetry"] + stats["dropped"]["normal"]
    assert not named(payloads) & set(range(in_flight[0], in_flight[1] + 1)), "in flight is not 'never sent'"
    assert all(s in stored for s in range(in_flight[0], in_flight[1] + 1) if s not in acked)
    for p in payloads:  # ranges are sorted, disjoint, agree with seq_from/seq_to, match the contract
        EventsDroppedPayload.model_validate(p)
        flat = [x for r in p["seqs"] for x in r]
        assert flat == sorted(flat) and p["seq_from"] == flat[0] and p["seq_to"] == flat[-1]


def test_a_drop_is_reported_within_the_interval_without_another_append_or_a_stop(tmp_path, monkeypatch):
    monkeypatch.setattr(space_module, "DROP_REPORT_INTERVAL_S", 1.0)
    store = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(max_bytes=MAX))
    try:
        i = 0
        while not reports(store):  # fill until the first drop: reported at once
            store.append(ev(i, "telemetry"))
            i += 1
        first = named(reports(store))
        dropped_now = store.stats()["dropped"]["telemetry"]
        while store.stats()["dropped"]["telemetry"] == dropped_now:  # a second drop, inside the interval
            store.append(ev(i, "telemetry"))
            i += 1
        assert len(reports(store)) == 1, "held back by the interval"
        deadline = time.monotonic() + 5
        while len(reports(store)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # no append, no close: the writer wakes itself for the report
        later = reports(store)
        assert len(later) == 2, "the held-back drop was reported within the interval"
        assert named(later) - first and not (named(later[1:]) & first)
        assert sum(p["count"] for p in later) == store.stats()["dropped"]["telemetry"]
    finally:
        store.close()


@pytest.mark.parametrize("ranges, clauses", [([], 0), ([(1, 2)], 1), ([(i * 10, i * 10 + 1) for i in range(100)], 32)])
def test_protected_ranges_become_a_bounded_number_of_sql_clauses(ranges, clauses):
    sql = protected_sql(ranges)
    assert sql.count("NOT BETWEEN") == clauses
    if ranges:  # merging only widens: every protected seq is still protected
        kept = [tuple(map(int, part.split(" AND ")[0:2])) for part in sql.split(" AND seq NOT BETWEEN ")[1:]]
        assert all(any(lo <= a and b <= hi for lo, hi in kept) for a, b in ranges)


def test_consecutive_drops_are_one_signed_record_and_the_chain_still_verifies(tmp_path):
    """One drop record per event grew without bound while the broker was away (on an 8 MiB
    disk they alone filled it in about a minute); a run of drops is now one row."""
    import sqlite3

    store = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(max_bytes=MAX))
    try:
        for i in range(600):  # an alarm now and then splits the telemetry into runs
            store.append(ev(i, "alarm" if i % 100 == 0 else "telemetry"))
        dropped = store.stats()["dropped"]["telemetry"]
        assert dropped > 300
        assert store.verify().ok
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / "state" / "events.db")
    try:
        records = db.execute("SELECT seq, last FROM dropped ORDER BY seq").fetchall()
        assert len(records) <= 8, f"{len(records)} records for {dropped} drops"
        assert sum((last or seq) - seq + 1 for seq, last in records) == dropped
        seq, last = next(r for r in records if r[1])
        db.execute("UPDATE dropped SET last = ? WHERE seq = ?", (last - 1, seq))  # hide a seq in a run
        db.commit()
    finally:
        db.close()
    store = Store(tmp_path / "state", device="d", site="s", settings=StoreSettings(max_bytes=MAX))
    try:
        report = store.verify()
    finally:
        store.close()
    assert not report.ok and report.break_seq == seq and "drop record" in report.problem
