"""Durable ingest: events/s through Store.append with 1, 4 and 16 producer threads.

Each producer does what a driver's ``ctx.emit`` does (build and validate an event,
then ``append`` it, which returns only after the batch holding it is committed with
synchronous=FULL) and waits for its own append before making the next event. The
limit is plain sqlite3 inserting the same rows into the same schema with the same
journal mode and fsync policy (WAL, synchronous=FULL), one thread.

Each of ``--runs`` runs (3) measures two pairs, and reports their ratios:

- 16 producers against the bare thread hand-off (the same 16 threads handing a lock
  to one writer that writes and fsyncs a file per batch: no SQLite, no event);
- ``append_many`` (100 events per call, one thread, each call durable) against raw
  sqlite3 batched the same way: 100 rows per transaction. The ratio to raw sqlite3
  at 1000 rows per transaction (ten times fewer fsyncs than any 100-event call can
  have) is reported beside it.

Both sides of a pair run in alternating slices (``--slices`` of each, in ABBA order)
with one store and one raw database per run, so both see the same disk and the same
neighbours: on a shared disk whose fsync time swings by 2x from second to second,
back-to-back blocks of seconds compare the neighbours more than the code. Rates are
summed counts over summed times. After every run each store is checked: every event
stored, seqs gap-free, the audit chain verified. The goals (>= 0.8 of the hand-off,
>= 0.5 of raw batched) must hold in the worst run: min, median and max are reported.

``python_us_per_event`` is the Python an event costs without SQLite: make_event (which
validates and serialises it), append_many's checks, the row with its chain hash, the seq
set after the commit; thread CPU time, the fastest of 7 rounds of 20 000 events.

With N producers each waiting for its own fsync, a commit holds at most N events,
so group commit is bounded by N x (durable commits per second); the fsync-bound
figure (one row per transaction) is reported too, to show that ceiling.
"""

from __future__ import annotations

import _thread
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge import daemon
from edge.events import make_event, set_seqs, wire
from edge.sqlite import open_db
from edge.store import Store
from edge.store._chain import GENESIS, chain_hash
from edge.store._schema import migrate

DEVICE, SITE = "bench-1", "site-1"


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=3.0, help="Run time of each side of a measurement.")
    parser.add_argument("--threads", default="1,4,16", help="Producer thread counts, comma separated.")
    parser.add_argument("--raw-rows", type=int, default=30_000, help="Rows inserted by the raw sqlite3 limit.")
    parser.add_argument("--payload-bytes", type=int, default=64, help="Padding in each event's payload.")
    parser.add_argument("--runs", type=int, default=3, help="Runs of the two paired measurements.")
    parser.add_argument("--slices", type=int, default=8, help="Alternating slices of each side in a run.")


def _event(n: int, pad: str):
    return make_event(device=DEVICE, site=SITE, type="sim.heartbeat", source="bench",
                      payload={"n": n, "pad": pad}, priority="telemetry")


def _rows(count: int, pad: str) -> list[tuple]:
    """The exact rows the store would write for ``count`` events (bodies, chain hashes)."""
    rows, prev = [], GENESIS
    for seq in range(1, count + 1):
        event_id, type_, priority, ts, head, tail = wire(_event(seq, pad))
        body = b"%b%d%b" % (head, seq, tail)
        prev = chain_hash(prev, body)
        rows.append((seq, event_id, type_, priority, ts, body, prev))
    return rows


class _Raw:
    """Plain sqlite3, the store's schema and pragmas, one connection kept across slices."""

    def __init__(self, path: Path, rows: list[tuple]):
        self.conn = open_db(path)  # the store's own settings: WAL, synchronous FULL
        migrate(self.conn)  # the store's own schema and indexes: same rows, same b-trees
        # Without seq: SQLite appends at the end of the b-tree as the store's seqs do, and the
        # rows can be inserted again and again with no Python per row in the timed loop.
        self.values, self.pos = [r[1:] for r in rows], 0

    def insert(self, per_txn: int, seconds: float) -> tuple[int, float]:
        sql = "INSERT INTO events (id, type, priority, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?)"
        values, conn, n = self.values, self.conn, 0
        started = time.perf_counter()
        while True:
            batch = values[self.pos:self.pos + per_txn]
            self.pos = (self.pos + per_txn) % (len(values) - per_txn)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, batch)
            conn.execute("COMMIT")
            n += len(batch)
            if time.perf_counter() - started >= seconds:
                return n, time.perf_counter() - started


def _raw_rows_per_s(rows: list[tuple], per_txn: int) -> float:
    with tempfile.TemporaryDirectory(prefix="edge-bench-raw-") as tmp:
        conn = open_db(Path(tmp) / "raw.db")
        migrate(conn)
        sql = "INSERT INTO events (seq, id, type, priority, ts, body, hash) VALUES (?, ?, ?, ?, ?, ?, ?)"
        started = time.perf_counter()
        for i in range(0, len(rows), per_txn):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[i:i + per_txn])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
        conn.close()
    return len(rows) / elapsed


def _produce(store: Store, threads: int, seconds: float, pad: str,
             latencies: list[list[float]] | None = None) -> tuple[int, float]:
    """``threads`` producers appending for ``seconds``: (events, elapsed)."""
    counts = [0] * threads
    gate = threading.Barrier(threads + 1)
    deadline = [0.0]

    def produce(i: int) -> None:
        clock, mine, n = time.perf_counter, latencies[i] if latencies else None, 0
        gate.wait()
        while clock() < deadline[0]:
            t0 = clock()
            store.append(_event(n, pad))
            if mine is not None:
                mine.append(clock() - t0)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    gate.wait()
    for w in workers:
        w.join()
    return sum(counts), time.perf_counter() - started


def _producers(threads: int, seconds: float, pad: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge-bench-store-") as tmp:
        store = Store(Path(tmp), device=DEVICE, site=SITE)
        latencies: list[list[float]] = [[] for _ in range(threads)]
        batches0, cpu0 = store._writer.batches, time.process_time()
        total, elapsed = _produce(store, threads, seconds, pad, latencies)
        cpu = time.process_time() - cpu0
        batches = store._writer.batches - batches0
        ok = _stored_gap_free_and_verified(store, total)
        store.close()
    lat = sorted(x for per in latencies for x in per)
    return {
        "events_per_s": round(total / elapsed),
        "commits_per_s": round(batches / elapsed),
        "events_per_commit": round(total / max(batches, 1), 2),
        "append_latency_ms_p50": round(statistics.median(lat) * 1000, 3),
        "append_latency_ms_p99": round(lat[int(len(lat) * 0.99) - 1] * 1000, 3),
        "cpu_us_per_event": round(cpu / max(total, 1) * 1e6, 1),
        "all_stored_and_chain_ok": ok,
    }


def _stored_gap_free_and_verified(store: Store, total: int) -> bool:
    """Every appended event is in the file, seqs run without a gap, the chain verifies."""
    count, low, high = store._conn().execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events").fetchone()
    return (count == total and store.stats()["pending"] == total
            and (total == 0 or high - low + 1 == total) and store.verify().ok)


def _append_many(store: Store, seconds: float, pad: str, batch: int = 100) -> tuple[int, float]:
    total, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        store.append_many([_event(total + i, pad) for i in range(batch)])
        total += batch
    return total, time.perf_counter() - started


def _bare_handoff(fd: int, threads: int, seconds: float, body_bytes: int) -> tuple[int, float]:
    """The thread model alone: ``threads`` producers each hand a job to one writer thread
    and wait on a lock; the writer writes and fsyncs one file per batch (no SQLite, no
    event to build) and releases the batch. What CPython threads can do on this machine
    when every producer waits for its own fsync, whatever the store does."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    done = [0]
    stopping = threading.Event()

    def writer() -> None:
        while not stopping.is_set() or not jobs.empty():
            try:
                batch = [jobs.get(timeout=0.1)]
            except queue.Empty:
                continue
            while True:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            os.write(fd, b"x" * (body_bytes * len(batch)))
            os.fsync(fd)
            for lock in batch:
                lock.release()

    gate = threading.Barrier(threads + 1)
    deadline = [0.0]

    def produce() -> None:
        n = 0
        gate.wait()
        while time.perf_counter() < deadline[0]:
            lock = _thread.allocate_lock()
            lock.acquire()
            jobs.put(lock)
            lock.acquire()
            n += 1
        done.append(n)

    w = threading.Thread(target=writer)
    w.start()
    workers = [threading.Thread(target=produce) for _ in range(threads)]
    for t in workers:
        t.start()
    deadline[0] = time.perf_counter() + seconds  # threads started outside the time, as ours
    started = time.perf_counter()
    gate.wait()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - started
    stopping.set()
    w.join()
    return sum(done), elapsed


class _NoSql:
    """The store's row-making steps on their own (the same methods), without SQLite."""

    _add_rows, _took = Store._add_rows, Store._took

    def __init__(self):
        self._next_seq, self._prev_hash, self._used = 1, GENESIS, 0
        self._pending_rows: list = []
        self._unsequenced: list = []


def _python_us_per_event(pad: str, events: int = 20_000, batch: int = 100) -> float:
    def one_round() -> float:
        store, clock = _NoSql(), time.thread_time
        started = clock()
        for _ in range(events // batch):
            made = [_event(i, pad) for i in range(batch)]
            for event in made:  # what append_many does in the caller's thread
                if event.seq is not None:
                    raise AssertionError("fresh events have no seq")
                try:
                    event._wire  # noqa: B018
                except AttributeError:
                    wire(event)
            store._pending_rows, store._unsequenced = [], []
            items = list(made)
            store._took(items, *store._add_rows(items))
            for seq, done in store._unsequenced:  # what the commit does once it is durable
                set_seqs(done, seq)
        return (clock() - started) / events * 1e6

    one_round()  # warm-up: the envelope's fragments, the id pool
    return min(one_round() for _ in range(7))


def _spread(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def _one_run(rows: list[tuple], top: int, seconds: float, slices: int, pad: str) -> dict:
    """One run: ours with ``top`` producers against the bare hand-off, append_many against raw
    sqlite3 at 100 and at 1000 rows a transaction, every side in alternating slices."""
    load = os.getloadavg()[0]
    sums = {k: [0, 0.0] for k in ("ours", "handoff", "many", "raw_100", "raw_1000")}
    with tempfile.TemporaryDirectory(prefix="edge-bench-run-") as tmp:
        tmp = Path(tmp)
        ours = Store(tmp / "ours", device=DEVICE, site=SITE)
        many = Store(tmp / "many", device=DEVICE, site=SITE)
        raw_100, raw_1000 = _Raw(tmp / "raw100.db", rows), _Raw(tmp / "raw1000.db", rows)
        fd = os.open(tmp / "handoff.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        each = seconds / slices
        sides = {
            "ours": lambda: _produce(ours, top, each, pad),
            "handoff": lambda: _bare_handoff(fd, top, each, len(rows[0][5])),
            "many": lambda: _append_many(many, each, pad),
            "raw_100": lambda: raw_100.insert(100, each),
            "raw_1000": lambda: raw_1000.insert(1000, each),
        }
        batches0 = ours._writer.batches
        for k in range(slices):
            for name in (sides if k % 2 == 0 else reversed(sides)):
                n, elapsed = sides[name]()
                sums[name][0] += n
                sums[name][1] += elapsed
        events_per_commit = sums["ours"][0] / max(ours._writer.batches - batches0, 1)
        ok = (_stored_gap_free_and_verified(ours, sums["ours"][0])
              and _stored_gap_free_and_verified(many, sums["many"][0]))
        ours.close()
        many.close()
        raw_100.conn.close()
        raw_1000.conn.close()
        os.close(fd)
    rate = {k: n / elapsed for k, (n, elapsed) in sums.items()}
    return {
        "events_per_s": round(rate["ours"]), "bare_handoff_per_s": round(rate["handoff"]),
        "share_of_bare_handoff": round(rate["ours"] / rate["handoff"], 3),
        "events_per_commit": round(events_per_commit, 2),
        "append_many_100_per_s": round(rate["many"]),
        "raw_sqlite_rows_per_s_100_per_txn": round(rate["raw_100"]),
        "raw_sqlite_rows_per_s_1000_per_txn": round(rate["raw_1000"]),
        "ratio_append_many_100": round(rate["many"] / rate["raw_100"], 3),
        "ratio_append_many_100_to_raw_1000_per_txn": round(rate["many"] / rate["raw_1000"], 3),
        "all_stored_gap_free_and_chain_ok": ok,
        "load_avg_1m": round((load + os.getloadavg()[0]) / 2, 2),
    }


def run(args) -> dict:
    # The daemon lowers the GIL switch interval at start-up; measure the store as it runs there.
    sys.setswitchinterval(daemon.GIL_SWITCH_INTERVAL_S)
    pad = "x" * args.payload_bytes
    thread_counts = [int(t) for t in args.threads.split(",")]
    top = max(thread_counts)
    rows = _rows(args.raw_rows, pad)
    runs = [_one_run(rows, top, args.seconds, args.slices, pad) for _ in range(args.runs)]
    ours = {n: _producers(n, args.seconds, pad) for n in thread_counts}
    limit = _raw_rows_per_s(rows, 1000)
    fsync_bound = _raw_rows_per_s(rows[:1500], 1)
    result = {
        "python_us_per_event": round(_python_us_per_event(pad), 2),
        f"share_of_bare_handoff_{top}_producers": _spread([r["share_of_bare_handoff"] for r in runs]),
        # Against raw sqlite3 committing the same rows 100 per transaction: the same
        # durable unit as a call of 100 events.
        "ratio_append_many_100": _spread([r["ratio_append_many_100"] for r in runs]),
        "ratio_append_many_100_to_raw_1000_per_txn": _spread(
            [r["ratio_append_many_100_to_raw_1000_per_txn"] for r in runs]),
        # Raw at 100 rows a transaction against raw at 1000: the most append_many of 100
        # (one fsync per call) could reach against 1000 a transaction with no Python at all.
        "ceiling_ratio_append_many_100": _spread(
            [r["raw_sqlite_rows_per_s_100_per_txn"] / r["raw_sqlite_rows_per_s_1000_per_txn"] for r in runs]),
        "all_stored_gap_free_and_chain_ok": all(r["all_stored_gap_free_and_chain_ok"] for r in runs)
        and all(o["all_stored_and_chain_ok"] for o in ours.values()),
        "runs": runs,
        "raw_sqlite_rows_per_s_1000_per_txn": round(limit),
        "raw_sqlite_rows_per_s_1_per_txn": round(fsync_bound),
        **{f"events_per_s_{n}_producers": ours[n]["events_per_s"] for n in thread_counts},
        f"ratio_{top}_producers": round(ours[top]["events_per_s"] / limit, 3),
        "ceiling_events_per_s": round(top * fsync_bound),
        # The best any store can do with `top` producers that each wait for their own fsync
        # of a SQLite commit.
        "ceiling_ratio": round(top * fsync_bound / limit, 3),
        f"share_of_ceiling_{top}_producers": round(ours[top]["events_per_s"] / (top * fsync_bound), 3),
        "producers": {str(n): ours[n] for n in thread_counts},
        "event_body_bytes": len(rows[0][5]),
        "gil_switch_interval_ms": sys.getswitchinterval() * 1000,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    result["ratio"] = result[f"ratio_{top}_producers"]
    return result
