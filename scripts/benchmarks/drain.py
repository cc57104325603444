"""Outbox drain: how fast a device back from weeks offline gets in sync.

Preloads N events of about 300 bytes into a real store, starts the uplink
against a real mosquitto on loopback and times until the last one is acked
(marked in the store), from ``link.start()`` (connecting included).

In the same run, the two halves of that work are measured alone:

- raw SQLite read-and-mark: a byte copy of the same store file (the same
  ``events`` table, rows and pages), read in seq order in batches of the
  uplink's size, each batch's message built as the uplink builds it (the
  stored bytes joined in the same envelope, the chain hash of its last
  event), each batch marked sent as one (first, last) seq row, one durable
  commit (same journal mode and fsync policy) per window of batches. No
  network. SQLite joins each batch's bodies itself, one statement per
  message over a rowid range: the cheapest way we know to get these bytes
  out of SQLite (``raw_sqlite_row_by_row_events_per_s``: the same with rows
  fetched and joined in Python, for comparison).
- raw paho QoS 1 publish: exactly the messages the SQLite half built (the
  same topic and payload bytes), ``mqtt.inflight`` of them in flight, with
  TCP_NODELAY as the uplink sets it, to the same broker, timed from connect
  to the last PUBACK. No store.

A drain can be no faster than the slower of the two; each round runs ours and
both halves back to back (their order rotating) and takes ours / that rate;
``ratio_to_raw_limit`` is the median over the rounds (min and max beside it).
The first message of the SQLite half is checked byte for byte against the
uplink's own packing of the same rows, so both sides send the same bytes.
"""
from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-bytes", type=int, default=300, help="Approximate stored size of one event.")
    parser.add_argument("--batch", type=int, default=None, help="Events per message (default: mqtt.batch_max_events).")
    parser.add_argument("--inflight", type=int, default=None, help="Messages in flight (default: mqtt.inflight).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of ours and both raw halves.")
    parser.add_argument("--nagle", action="store_true",
                        help="Broker without set_tcp_nodelay (mosquitto's default) for every side.")


def _preload(store, n: int, event_bytes: int) -> None:
    from edge.events import make_event

    probe = make_event(device="bench-1", site="bench", type="sim.load", source="bench", payload={"n": 0})
    pad = "x" * max(0, event_bytes - len(probe.canonical_bytes()) - 20)
    chunk = 5000
    for start in range(0, n, chunk):
        store.append_many([
            make_event(device="bench-1", site="bench", type="sim.load", source="bench",
                       payload={"n": i, "pad": pad}, priority="telemetry")
            for i in range(start, min(n, start + chunk))])


def _ours(settings, store, n: int) -> float:
    from edge.mqtt import MqttLink

    link = MqttLink(settings, store, device_state=False)
    started = time.perf_counter()
    link.start()
    try:
        while link.uplink.acker.committed < n:
            if time.perf_counter() - started > 300:
                raise TimeoutError(f"uplink acked only {link.uplink.acker.committed} of {n} in 300 s")
            time.sleep(0.005)  # coarse enough not to compete with the threads it measures
        return time.perf_counter() - started
    finally:
        link.stop()


def _raw_sqlite_read_mark(db_path: Path, head: bytes, batch: int, window: int, n: int,
                          per_row: bool = False) -> tuple[float, list[bytes]]:
    """Read every row in batches, build each batch's message and mark the batch sent.

    SQLite joins each batch's bodies itself: one statement per message over a rowid range,
    the cheapest way to get those bytes out of SQLite that we know (the uplink's too). With
    ``per_row`` it fetches rows instead (seq, type, body) and joins them in Python."""
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("DROP TABLE IF EXISTS raw_sent")
    db.execute("CREATE TABLE raw_sent (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, at REAL NOT NULL)")
    messages: list[bytes] = []
    started = time.perf_counter()
    cursor, done = 0, 0
    while done < n:
        ranges = []
        for _ in range(window):
            if per_row:
                rows = db.execute("SELECT seq, type, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                  (cursor, batch)).fetchall()
                if not rows:
                    break
                count, lo, hi, body = len(rows), rows[0][0], rows[-1][0], b",".join([r[2] for r in rows])
            else:
                count, lo, hi, body = db.execute(
                    "SELECT count(*), min(seq), max(seq), CAST(group_concat(body, ',') AS BLOB) "
                    "FROM events WHERE seq BETWEEN ? AND ?", (cursor + 1, cursor + batch)).fetchone()
                if not count:
                    break
            digest = db.execute("SELECT hash FROM events WHERE seq = ?", (hi,)).fetchone()[0]
            messages.append(head + body + b'],"chain":{"seq":%d,"hash":"%s"}}' % (hi, digest.hex().encode()))
            ranges.append((lo, hi, time.time()))
            done += count
            cursor = hi
        if not ranges:
            break
        db.execute("BEGIN")
        db.executemany("INSERT INTO raw_sent VALUES (?, ?, ?)", ranges)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    if done != n:
        raise RuntimeError(f"raw SQLite half read {done} of {n} rows")
    return elapsed, messages


def _raw_paho_publish(messages: list[bytes], topic: str, port: int, window: int) -> float:
    """Publish ``messages`` at QoS 1, ``window`` in flight, until every PUBACK is in."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    free = threading.Semaphore(window)
    done, connected = threading.Event(), threading.Event()
    acked = [0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-publish", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window + 16)
    client.max_queued_messages_set(0)

    def on_publish(c, u, mid, rc, p):
        acked[0] += 1
        free.release()
        if acked[0] == len(messages):
            done.set()

    client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_publish = on_publish
    started = time.perf_counter()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    for payload in messages:
        free.acquire()
        client.publish(topic, payload, qos=1)
    if not done.wait(300):
        raise TimeoutError(f"raw paho half: {acked[0]} of {len(messages)} PUBACKs in 300 s")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def _same_bytes_as_ours(store, settings, first: bytes) -> None:
    """The raw halves must send what the uplink sends: its packing of the first rows."""
    from edge.mqtt.uplink import pack

    rows = store.outbox_bodies(settings.mqtt.batch_max_events)
    ours = pack(rows, site=settings.site, device=settings.device_id, max_events=settings.mqtt.batch_max_events,
                max_bytes=settings.mqtt.batch_max_bytes, store_id=store.store_id)
    if ours[0].payload != first:
        raise RuntimeError("the raw halves' first message differs from the uplink's: not the same work")


def _open_copy(seed: Path, to: Path, settings):
    from edge.store import Store

    shutil.rmtree(to, ignore_errors=True)
    shutil.copytree(seed, to)
    return Store(to, device="bench-1", site="bench", settings=settings.store)


def run(args) -> dict:
    from edge.config import Settings
    from edge.mqtt import topics
    from edge.store import Store
    from edge.testing import Mosquitto

    rounds = []
    with tempfile.TemporaryDirectory(prefix="edge-drain-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp / "broker", nodelay=not args.nagle).start()
        try:
            mqtt_cfg = {"brokers": [broker.uri]}
            if args.batch:
                mqtt_cfg["batch_max_events"] = args.batch
            if args.inflight:
                mqtt_cfg["inflight"] = args.inflight
            settings = Settings(device_id="bench-1", site="bench", role="gate", state_dir=tmp / "seed",
                                mqtt=mqtt_cfg, store={"max_bytes": 1 << 31, "retention_bytes": 1 << 31})
            batch, window = settings.mqtt.batch_max_events, settings.mqtt.inflight
            store = Store(settings.state_dir, device="bench-1", site="bench", settings=settings.store)
            _preload(store, args.events, args.event_bytes)
            count, avg = store._conn().execute("SELECT COUNT(*), AVG(length(body)) FROM events").fetchone()
            store_id = store.store_id
            store.close()  # checkpoints the WAL: the seed is one file, copied per run
            raw_db = tmp / "raw" / "events.db"
            raw_db.parent.mkdir()
            shutil.copyfile(tmp / "seed" / "events.db", raw_db)
            head = b'{"store":"%s","events":[' % store_id.encode()
            topic = topics.events("bench", "bench-1", "sim")
            messages = None
            for r in range(args.rounds):
                got = {}
                # Rotated each round, the SQLite half always before paho (it builds the messages).
                order = [["ours", "sqlite", "paho"], ["sqlite", "paho", "ours"], ["sqlite", "ours", "paho"]][r % 3]
                for side in order:
                    if side == "ours":
                        store = _open_copy(tmp / "seed", tmp / "ours", settings)
                        try:
                            got["ours"] = _ours(settings, store, count)
                            got["pending_after"] = store.stats()["pending"]
                        finally:
                            store.close()
                    elif side == "sqlite":
                        got["sqlite"], messages = _raw_sqlite_read_mark(raw_db, head, batch, window, count)
                        got["sqlite_rows"], _ = _raw_sqlite_read_mark(raw_db, head, batch, window, count, True)
                    else:
                        if messages is None:  # never before the SQLite half: its messages are the input
                            raise AssertionError("round order")
                        got["paho"] = _raw_paho_publish(messages, topic, broker.port, window)
                if r == 0:
                    check = _open_copy(tmp / "seed", tmp / "check", settings)
                    try:
                        _same_bytes_as_ours(check, settings, messages[0])
                    finally:
                        check.close()
                rounds.append(got)
        finally:
            broker.stop()
    return _report(args, settings, count, avg, rounds)


def _report(args, settings, count: int, avg: float, rounds: list[dict]) -> dict:
    per_round = []
    for got in rounds:
        ours, sqlite, paho, rows = (count / got[k] for k in ("ours", "sqlite", "paho", "sqlite_rows"))
        per_round.append({"events_per_s": round(ours), "raw_sqlite_read_mark_events_per_s": round(sqlite),
                          "raw_sqlite_row_by_row_events_per_s": round(rows),
                          "raw_paho_qos1_publish_events_per_s": round(paho),
                          "raw_limit": "sqlite" if sqlite < paho else "paho",
                          "ratio_to_raw_limit": round(ours / min(sqlite, paho), 3),
                          "pending_after": got["pending_after"]})
    mid = sorted(per_round, key=lambda p: p["ratio_to_raw_limit"])[len(per_round) // 2]
    ratios = [p["ratio_to_raw_limit"] for p in per_round]
    return {
        "events": count, "event_bytes_avg": round(avg, 1), "broker_tcp_nodelay": not args.nagle,
        "batch_events": settings.mqtt.batch_max_events, "inflight_messages": settings.mqtt.inflight,
        **{k: v for k, v in mid.items() if k != "pending_after"},  # the median round's figures
        "ratio_to_raw_limit_min": min(ratios), "ratio_to_raw_limit_max": max(ratios),
        "ratio_to_raw_limit_median": statistics.median(ratios),
        "pending_after": max(p["pending_after"] for p in per_round),
        "rounds": per_round, "load_avg_1m": round(os.getloadavg()[0], 2),
        "goal": "ratio_to_raw_limit >= 0.8 (higher is better)",
    }
