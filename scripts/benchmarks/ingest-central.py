"""Central ingest throughput: K = 1, 2, 4 ingest processes in one shared-subscription group
against a bare PostgreSQL COPY of the same rows, measured in the same run.

The K processes start and subscribe; then the messages (contract batches from many
devices, made beforehand) are published as fast as the broker takes them, and events/s is
counted from the first publish to the last row committed. Each K gets a fresh database. ``bare_copy_rows_per_s``
is COPY of the same rows into a table with the same indexes, in the ingest's batch size,
one commit per batch. ``ratio_k4`` = K=4 events/s / bare COPY rows/s (goal >= 0.5; higher
is better). ``events_lost`` = events published minus rows stored, over all runs (must be 0).
PostgreSQL is started from the system's binaries (as edge's tests do) unless --db is given.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from edge.testing.broker import Mosquitto
from edge.testing.central import IngestProcess, Publisher, event
from services.central._parse import Parsed, parse_into
from services.central.db import open_db


def add_arguments(parser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="Events per run.")
    parser.add_argument("--per-message", type=int, default=50, help="Events per MQTT message.")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--ks", default="1,2,4", help="Ingest process counts, comma separated.")
    parser.add_argument("--batch-max", type=int, default=500, help="Messages per ingest transaction.")


def _messages(n_events: int, per: int, devices: int) -> list[tuple[str, bytes]]:
    seq = dict.fromkeys(range(devices), 0)
    out, made, i = [], 0, 0
    while made < n_events:
        d = i % devices
        name = f"dev-{d:04d}"
        k = min(per, n_events - made)
        evs = [event(name, "bench", seq[d] + j + 1, "turnstile.passage", lane=1, direction="in") for j in range(k)]
        seq[d] += k
        made += k
        out.append((f"edge/v1/bench/{name}/events/turnstile", json.dumps({"events": evs}).encode()))
        i += 1
    return out


def _publish(port: int, messages) -> None:
    pub = Publisher(port)
    infos = [pub.client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    pub.close()


def _bare_copy(url: str, messages, per_batch_messages: int) -> float:
    db = open_db(url)
    db.migrate()
    with db.pool.connection() as conn:
        conn.execute("CREATE TABLE bare_events (LIKE events INCLUDING ALL)")
    now = datetime.now(UTC)
    batches = []
    for i in range(0, len(messages), per_batch_messages):
        parsed = Parsed()
        for topic, payload in messages[i:i + per_batch_messages]:
            parse_into(parsed, topic, payload, now)
        batches.append(parsed.events)
    rows = sum(len(b) for b in batches)
    started = time.perf_counter()
    for batch in batches:
        db.copy_rows("bare_events", batch)
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


def _run_k(k: int, broker: Mosquitto, url: str, messages, total: int, workdir: Path, batch_max: int) -> dict:
    procs = [IngestProcess(workdir / f"k{k}", broker.uri, url, "--group", f"bench{k}", "--batch-max",
                           str(batch_max), instance=i + 1) for i in range(k)]
    for p in procs:
        p.start()
    db = open_db(url)
    count = lambda: db.query("SELECT COUNT(*) FROM events")[0][0]  # noqa: E731
    first = 0
    t0 = time.perf_counter()
    _publish(broker.port, messages)
    deadline = time.monotonic() + 600
    last, stalled = first, time.monotonic()
    while (n := count()) < total and time.monotonic() < deadline:
        if n != last:
            last, stalled = n, time.monotonic()
        elif time.monotonic() - stalled > 30:
            break  # nothing new for 30 s: report what is missing
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.stop()
    db.close()
    return {"events_per_s": (n - first) / elapsed if elapsed > 0 else 0.0, "stored": n}


def run(args) -> dict:
    from edge.testing.postgres import Postgres

    ks = [int(k) for k in args.ks.split(",")]
    messages = _messages(args.events, args.per_message, args.devices)
    server = Postgres().start()
    try:
        with tempfile.TemporaryDirectory(prefix="edge-bench-central-") as tmp:
            broker = Mosquitto(Path(tmp) / "broker").start()
            try:
                out = {"events": args.events, "events_per_message": args.per_message, "devices": args.devices}
                lost = 0
                for k in ks:
                    r = _run_k(k, broker, server.new_database(), messages, args.events, Path(tmp), args.batch_max)
                    out[f"events_per_s_k{k}"] = round(r["events_per_s"])
                    lost += args.events - r["stored"]
                out["bare_copy_rows_per_s"] = round(_bare_copy(server.new_database(), messages, args.batch_max))
                if "events_per_s_k4" in out:
                    out["ratio_k4"] = round(out["events_per_s_k4"] / out["bare_copy_rows_per_s"], 3)
                out["events_lost"] = lost
                return out
            finally:
                broker.stop()
    finally:
        server.stop()
