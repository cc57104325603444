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

A drain can be no faster than the slower of the two: ``ratio_to_raw_limit`` is
ours / that rate. Both halves together are also run the plainest way
(``raw_pipeline_events_per_s``): a thread reading and building the messages as
the SQLite half does, one publishing them as the paho half does, one marking
each batch sent once its PUBACK is in. Where the halves share too few cores,
that is what doing both costs here (``ratio_to_raw_pipeline``).

Each round runs ours and the raw sides back to back, their order rotating,
each store copy written out (fsynced) before its clock starts; the figures
are the median round's (``median_low`` of the ratios), with min and max over
the rounds. The first message of the SQLite half is checked byte for byte
against the uplink's own packing of the same rows: both send the same bytes.

Each side's CPU is counted too: this process's (every thread) plus the
broker's (``/proc``). Both halves' work needs at least their CPU added up,
so on this machine's cores no pipeline of them can end before
``(cpu_sqlite + cpu_paho) / cores``: the machine's limit is the slower of that
and the slower half (``ratio_to_machine_limit``). ``cpu_ratio_to_raw_halves``
is ours CPU against the halves' CPU added up: the work ours adds, whatever the
cores.
"""
from __future__ import annotations

import importlib
import os
import queue
import shutil
import socket
import sqlite3
import statistics
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
    parser.add_argument("--rounds", type=int, default=5, help="Rounds of ours and the raw sides, back to back.")
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
        # Woken by the acker's commits, as the raw sides wait for their last PUBACK: no polling
        # thread competing for the GIL with the threads it measures.
        if not link.uplink.acker.wait_committed(n, 300):
            raise TimeoutError(f"uplink acked only {link.uplink.acker.committed} of {n} in 300 s")
        return time.perf_counter() - started
    finally:
        link.stop()


def _raw_sqlite_read_mark(db_path: Path, head: bytes, batch: int, window: int, n: int,
                          per_row: bool = False) -> tuple[float, list[bytes]]:
    """Read every row in batches, build each batch's message and mark the batch sent.

    SQLite joins each batch's bodies itself: one statement per message over a rowid range,
    the cheapest way to get those bytes out of SQLite that we know (the uplink's too). With
    ``per_row`` it fetches rows instead (seq, type, body) and joins them in Python."""
    db = _raw_db(db_path, fresh=True)
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
                count, lo, hi, body = db.execute(_RAW_SPAN, (cursor + 1, cursor + batch)).fetchone()
                if not count:
                    break
            messages.append(_raw_message(db, head, body, hi))
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


# The seq bounds by two rowid lookups, not min(seq)/max(seq) over the scan, as the uplink's.
_RAW_SPAN = ("SELECT count(*), (SELECT min(seq) FROM events WHERE seq BETWEEN ?1 AND ?2), "
             "(SELECT max(seq) FROM events WHERE seq BETWEEN ?1 AND ?2), CAST(group_concat(body, ',') AS BLOB) "
             "FROM events WHERE seq BETWEEN ?1 AND ?2")


def _cpu_s(broker) -> float:
    """CPU seconds used so far by this process (all threads) and the broker."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{broker.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return time.process_time() + (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def _raw_db(db_path: Path, fresh: bool = False) -> sqlite3.Connection:
    db = open_db(db_path)  # the store's own settings: WAL, synchronous FULL
    if fresh:
        db.execute("DROP TABLE IF EXISTS raw_sent")
        db.execute("CREATE TABLE raw_sent (lo INTEGER PRIMARY KEY, hi INTEGER NOT NULL, at REAL NOT NULL)")
    return db


def _raw_message(db: sqlite3.Connection, head: bytes, body: bytes, last: int) -> bytes:
    digest = db.execute("SELECT hash FROM events WHERE seq = ?", (last,)).fetchone()[0]
    return b"".join((head, body, b'],"chain":{"seq":%d,"hash":"%s"}}' % (last, digest.hex().encode())))


def _paho_client(client_id: str, window: int):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window + 16)
    client.max_queued_messages_set(0)
    client.on_socket_open = lambda c, u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _raw_pipeline(db_path: Path, head: bytes, topic: str, port: int, batch: int, window: int, n: int) -> float:
    """Both halves at once, the plainest way: a thread reads and builds the messages as the
    SQLite half does, this one publishes them as the paho half does, and a third marks each
    batch sent (its (first, last) row, durable) once its PUBACK is in, one commit for all
    the PUBACKs waiting. What this machine does with both halves sharing its cores."""
    ready: queue.Queue = queue.Queue(maxsize=window)
    acked: queue.SimpleQueue = queue.SimpleQueue()
    free, connected, lock = threading.Semaphore(window), threading.Event(), threading.Lock()
    inflight: dict[int, tuple] = {}
    early: set[int] = set()  # PUBACKs that beat their registration

    def read() -> None:
        db, cursor = _raw_db(db_path), 0
        while True:
            count, lo, hi, body = db.execute(_RAW_SPAN, (cursor + 1, cursor + batch)).fetchone()
            if not count:
                break
            ready.put((_raw_message(db, head, body, hi), (lo, hi, count)))
            cursor = hi
        ready.put(None)
        db.close()

    def mark() -> None:
        db, done = _raw_db(db_path, fresh=True), 0
        while done < n:
            got = [acked.get()]
            while not acked.empty():
                got.append(acked.get())
            db.execute("BEGIN")
            db.executemany("INSERT INTO raw_sent VALUES (?, ?, ?)", [(lo, hi, time.time()) for lo, hi, _ in got])
            db.execute("COMMIT")
            done += sum(k for _lo, _hi, k in got)
        db.close()

    def on_publish(c, u, mid, rc, p) -> None:
        with lock:
            item = inflight.pop(mid, None)
            if item is None:
                early.add(mid)
        if item is not None:
            acked.put(item)
            free.release()

    client = _paho_client("raw-pipeline", window)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.on_publish = on_publish
    threads = [threading.Thread(target=read), threading.Thread(target=mark)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    while (got := ready.get()) is not None:
        payload, item = got
        free.acquire()
        mid = client.publish(topic, payload, qos=1).mid
        with lock:
            now = mid in early
            if now:
                early.discard(mid)
            else:
                inflight[mid] = item
        if now:
            acked.put(item)
            free.release()
    for thread in threads:
        thread.join(300)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def _raw_paho_publish(messages: list[bytes], topic: str, port: int, window: int) -> float:
    """Publish ``messages`` at QoS 1, ``window`` in flight, until every PUBACK is in."""
    free = threading.Semaphore(window)
    done, connected = threading.Event(), threading.Event()
    acked = [0]
    client = _paho_client("raw-publish", window)

    def on_publish(c, u, mid, rc, p):
        acked[0] += 1
        free.release()
        if acked[0] == len(messages):
            done.set()

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
    _sync(to)
    return Store(to, device="bench-1", site="bench", settings=settings.store)


def _sync(folder: Path) -> None:
    """Write the copy out now: else the first fsync of the run (an ack commit) pays for it."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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
            _sync(raw_db.parent)
            head = b'{"store":"%s","events":[' % store_id.encode()
            topic = topics.events("bench", "bench-1", "sim")
            messages = None
            # Imported before any clock starts: the first round's first side (ours, every third
            # run) does not pay for loading the MQTT link, paho and the read-ahead's pool.
            for module in ("concurrent.futures", "paho.mqtt.client", "edge.mqtt.link"):
                importlib.import_module(module)
            for r in range(args.rounds):
                got = {}
                # Rotated each round, the SQLite half always before paho (it builds the messages).
                order = [["ours", "sqlite", "paho", "pipeline"], ["sqlite", "paho", "pipeline", "ours"],
                         ["pipeline", "sqlite", "ours", "paho"]][r % 3]
                for side in order:
                    cpu_before = _cpu_s(broker)
                    if side == "ours":
                        store = _open_copy(tmp / "seed", tmp / "ours", settings)
                        cpu_before = _cpu_s(broker)  # opening the copy is not the drain
                        try:
                            got["ours"] = _ours(settings, store, count)
                            got["pending_after"] = store.stats()["pending"]
                        finally:
                            store.close()
                    elif side == "sqlite":
                        got["sqlite"], messages = _raw_sqlite_read_mark(raw_db, head, batch, window, count)
                        got["cpu_sqlite"] = _cpu_s(broker) - cpu_before  # without the row-by-row run
                        got["sqlite_rows"], _ = _raw_sqlite_read_mark(raw_db, head, batch, window, count, True)
                        continue
                    elif side == "pipeline":
                        got["pipeline"] = _raw_pipeline(raw_db, head, topic, broker.port, batch, window, count)
                    else:
                        if messages is None:  # never before the SQLite half: its messages are the input
                            raise AssertionError("round order")
                        got["paho"] = _raw_paho_publish(messages, topic, broker.port, window)
                    got["cpu_" + side] = _cpu_s(broker) - cpu_before
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
        ours, sqlite, paho, rows, pipe = (count / got[k] for k in ("ours", "sqlite", "paho", "sqlite_rows", "pipeline"))
        cores = os.cpu_count() or 1
        machine = count / max(got["sqlite"], got["paho"], (got["cpu_sqlite"] + got["cpu_paho"]) / cores)
        per_round.append({"events_per_s": round(ours), "raw_sqlite_read_mark_events_per_s": round(sqlite),
                          "raw_sqlite_row_by_row_events_per_s": round(rows),
                          "raw_paho_qos1_publish_events_per_s": round(paho),
                          "raw_limit": "sqlite" if sqlite < paho else "paho",
                          "ratio_to_raw_limit": round(ours / min(sqlite, paho), 3),
                          "raw_pipeline_events_per_s": round(pipe), "ratio_to_raw_pipeline": round(ours / pipe, 3),
                          "cpu_ms": {k: round(got["cpu_" + k] * 1000, 1) for k in ("ours", "sqlite", "paho", "pipeline")},
                          "machine_limit_events_per_s": round(machine), "ratio_to_machine_limit": round(ours / machine, 3),
                          "cpu_ratio_to_raw_halves": round(got["cpu_ours"] / (got["cpu_sqlite"] + got["cpu_paho"]), 3),
                          "pending_after": got["pending_after"]})
    ratios = [p["ratio_to_raw_limit"] for p in per_round]
    mid = per_round[ratios.index(statistics.median_low(ratios))]
    piped = [p["ratio_to_raw_pipeline"] for p in per_round]
    return {
        "events": count, "event_bytes_avg": round(avg, 1), "broker_tcp_nodelay": not args.nagle,
        "batch_events": settings.mqtt.batch_max_events, "inflight_messages": settings.mqtt.inflight,
        **{k: v for k, v in mid.items() if k != "pending_after"},  # the median round's figures (median_low)
        "ratio_to_raw_limit_min": min(ratios), "ratio_to_raw_limit_max": max(ratios),
        # over the rounds on its own (the median round above is the one of ratio_to_raw_limit)
        "ratio_to_raw_pipeline_median": statistics.median_low(piped),
        "ratio_to_machine_limit_median": statistics.median_low(p["ratio_to_machine_limit"] for p in per_round),
        "cpu_ratio_to_raw_halves_median": statistics.median_low(p["cpu_ratio_to_raw_halves"] for p in per_round),
        "ratio_to_raw_pipeline_min": min(piped), "ratio_to_raw_pipeline_max": max(piped),
        "pending_after": max(p["pending_after"] for p in per_round),
        "rounds": per_round, "load_avg_1m": round(os.getloadavg()[0], 2),
        "goal": "ratio_to_raw_limit >= 0.8 (higher is better)",
    }
