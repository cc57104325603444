"""Outbox drain: how fast a device back from weeks offline gets in sync.

Preloads N events of about 300 bytes into a real store, starts the uplink
against a real mosquitto on loopback and times until the last one is acked
(marked in the store). In the same run, the bare limit of this stack: a plain
script that reads the same stored event bytes from a plain sqlite3 table (same
journal mode and fsync policy as the store) in batches of the same size,
publishes each batch with paho at QoS 1 with the same in-flight window, and
deletes the rows on PUBACK, once before and once after ours (their mean is the
limit). Higher events_per_s is better; ratio = ours / bare.

The two halves of that pipeline are also measured alone, in the same run: raw
SQLite reading the same rows in batches and marking them sent (one commit per
window of batches, same journal mode and fsync policy), with no network; and
raw paho publishing the same batch payloads, prebuilt in memory, at QoS 1 with
the same window, until every PUBACK is in. A drain can be no faster than the
slower of the two: ``ratio_to_raw_limit`` = ours / that rate.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from pathlib import Path

from edge.sqlite import open_db


def add_arguments(parser) -> None:
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--event-bytes", type=int, default=300, help="Approximate stored size of one event.")
    parser.add_argument("--batch", type=int, default=None, help="Events per message (default: mqtt.batch_max_events).")
    parser.add_argument("--inflight", type=int, default=None, help="Messages in flight (default: mqtt.inflight).")
    parser.add_argument("--nagle", action="store_true",
                        help="Broker without set_tcp_nodelay (mosquitto's default) for both runs.")


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
            time.sleep(0.01)  # coarse enough not to compete with the threads it measures
        return time.perf_counter() - started
    finally:
        link.stop()


def _bare(db_path: Path, port: int, batch: int, window: int, n: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    db = open_db(db_path)  # the store's own settings: WAL, synchronous FULL
    acks: queue.SimpleQueue = queue.SimpleQueue()
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare-drain", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window + 16)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_publish = lambda c, u, mid, rc, p: acks.put(mid)
    started = time.perf_counter()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    inflight: dict[int, tuple[int, int]] = {}
    cursor, done = 0, 0
    while done < n:
        while len(inflight) < window:
            rows = db.execute("SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                              (cursor, batch)).fetchall()
            if not rows:
                break
            payload = b'{"events":[' + b",".join(r[1] for r in rows) + b"]}"
            info = client.publish("edge/v1/bench/bench-1/events/sim", payload, qos=1)
            inflight[info.mid] = (rows[0][0], rows[-1][0])
            cursor = rows[-1][0]
        acked = [acks.get()]
        while not acks.empty():
            acked.append(acks.get_nowait())
        db.execute("BEGIN")
        for mid in acked:
            lo, hi = inflight.pop(mid)
            done += db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    db.close()
    return elapsed


def _raw_sqlite_read_mark(db_path: Path, batch: int, window: int, n: int) -> float:
    """Read every row in batches and mark it sent, committing once per window of batches. The
    cheapest durable mark there is: one (first, last) seq row per batch, as the store's range acks."""
    db = open_db(db_path)  # the store's own settings: WAL, synchronous FULL
    db.execute("CREATE TABLE sent (lo INTEGER NOT NULL, hi INTEGER NOT NULL)")
    started = time.perf_counter()
    cursor, done = 0, 0
    while done < n:
        ranges = []
        for _ in range(window):
            rows = db.execute("SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                              (cursor, batch)).fetchall()
            if not rows:
                break
            message = b'{"events":[' + b",".join(r[1] for r in rows) + b"]}"  # as the uplink builds it
            ranges.append((rows[0][0], rows[-1][0], len(rows), len(message)))
            cursor = rows[-1][0]
        if not ranges:
            break
        db.execute("BEGIN")
        db.executemany("INSERT INTO sent VALUES (?, ?)", [(lo, hi) for lo, hi, _, _ in ranges])
        db.execute("COMMIT")
        done += sum(k for _, _, k, _ in ranges)
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed


def _raw_paho_publish(db_path: Path, port: int, batch: int, window: int) -> tuple[float, int]:
    """Publish the same batch payloads (prebuilt in memory) at QoS 1, ``window`` in flight."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    db = open_db(db_path, readonly=True)
    bodies = [r[0] for r in db.execute("SELECT body FROM outbox ORDER BY seq")]
    db.close()
    payloads = [(b'{"events":[' + b",".join(bodies[i:i + batch]) + b"]}", len(bodies[i:i + batch]))
                for i in range(0, len(bodies), batch)]
    free = threading.Semaphore(window)
    done = threading.Event()
    acked = [0]
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-publish", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window + 16)

    def on_publish(c, u, mid, rc, p):
        acked[0] += 1
        free.release()
        if acked[0] == len(payloads):
            done.set()

    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    started = time.perf_counter()
    for payload, _ in payloads:
        free.acquire()
        client.publish("edge/v1/bench/bench-1/events/sim", payload, qos=1)
    done.wait(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed, sum(k for _, k in payloads)


def _copy_bodies(store_db: Path, bare_db: Path) -> int:
    src = open_db(store_db, readonly=True)
    dst = open_db(bare_db)
    dst.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    dst.execute("BEGIN")
    dst.executemany("INSERT INTO outbox VALUES (?, ?)", src.execute("SELECT seq, body FROM events ORDER BY seq"))
    dst.execute("COMMIT")
    total = dst.execute("SELECT COUNT(*), AVG(length(body)) FROM outbox").fetchone()
    src.close()
    dst.close()
    return total


def run(args) -> dict:
    from edge.config import Settings
    from edge.store import Store
    from edge.testing import Mosquitto

    with tempfile.TemporaryDirectory(prefix="edge-drain-") as tmp:
        tmp = Path(tmp)
        broker = Mosquitto(tmp / "broker", nodelay=not args.nagle).start()
        try:
            mqtt_cfg = {"brokers": [broker.uri]}
            if args.batch:
                mqtt_cfg["batch_max_events"] = args.batch
            if args.inflight:
                mqtt_cfg["inflight"] = args.inflight
            settings = Settings(device_id="bench-1", site="bench", role="gate", state_dir=tmp / "state",
                                mqtt=mqtt_cfg, store={"max_bytes": 1 << 31, "retention_bytes": 1 << 31})
            store = Store(settings.state_dir, device="bench-1", site="bench", settings=settings.store)
            _preload(store, args.events, args.event_bytes)
            count, avg = _copy_bodies(store.path, tmp / "bare1.db")
            _copy_bodies(store.path, tmp / "bare2.db")
            _copy_bodies(store.path, tmp / "raw-sqlite.db")
            batch, window = settings.mqtt.batch_max_events, settings.mqtt.inflight
            # Bare before and after ours: on a shared machine the load drifts, and the
            # mean of the two runs bracketing ours is the fairer limit.
            bare_runs = [_bare(tmp / "bare1.db", broker.port, batch, window, count)]
            ours_s = _ours(settings, store, count)
            bare_runs.append(_bare(tmp / "bare2.db", broker.port, batch, window, count))
            bare_s = sum(bare_runs) / len(bare_runs)
            sqlite_s = _raw_sqlite_read_mark(tmp / "raw-sqlite.db", batch, window, count)
            paho_s, paho_events = _raw_paho_publish(tmp / "raw-sqlite.db", broker.port, batch, window)
            pending = store.stats()["pending"]
            store.close()
        finally:
            broker.stop()
    ours_rate, bare_rate = count / ours_s, count / bare_s
    sqlite_rate, paho_rate = count / sqlite_s, paho_events / paho_s
    raw_limit = min(sqlite_rate, paho_rate)
    return {
        "events": count, "event_bytes_avg": round(avg, 1), "broker_tcp_nodelay": not args.nagle,
        "batch_events": settings.mqtt.batch_max_events, "inflight_messages": settings.mqtt.inflight,
        "events_per_s": round(ours_rate), "bare_events_per_s": round(bare_rate),
        "ours_s": round(ours_s, 3), "bare_s": round(bare_s, 3),
        "bare_runs_s": [round(b, 3) for b in bare_runs],
        "ratio": round(ours_rate / bare_rate, 3), "pending_after": pending,
        "raw_sqlite_read_mark_events_per_s": round(sqlite_rate),
        "raw_paho_qos1_publish_events_per_s": round(paho_rate),
        "raw_limit": "sqlite" if sqlite_rate < paho_rate else "paho",
        "ratio_to_raw_limit": round(ours_rate / raw_limit, 3),
        "goal": "ratio_to_raw_limit >= 0.8; >= 150000 events_per_s (higher is better)",
    }
