"""Turnstile driver over a pty against the simulator: command-to-ACK round trip and events/s.

The simulator paces its bytes at the configured baud rate (a pty itself has
none), so the line's own limit applies; the limit is computed in the same run
from the frame sizes: bytes x 10 bits (8N1) / baud. Events go into a real
durable store, as in the daemon. ratio = ours / limit: for latency lower is
better (>= 1), for events/s higher is better (<= 1).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import structlog

from drivers.sim.turnstile import TurnstileSim
from drivers.turnstile import messages as m
from drivers.turnstile.codecs import get_codec
from drivers.turnstile.driver import TurnstileConfig, TurnstileDriver
from edge.driver import DriverContext
from edge.events import make_event
from edge.logs import configure
from edge.store import Store


def add_arguments(parser) -> None:
    parser.add_argument("--bauds", default="9600,115200", help="Comma-separated baud rates.")
    parser.add_argument("--codecs", default="rs485-bus,bcc-p2p")
    parser.add_argument("--commands", type=int, default=40, help="Round trips per case.")
    parser.add_argument("--seconds", type=float, default=2.0, help="Target duration of each event burst.")


def run(args) -> dict:
    _quiet_logs()
    results = {}
    for codec in args.codecs.split(","):
        for baud in (int(b) for b in args.bauds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                results[f"{codec}@{baud}"] = _case(codec, baud, Path(tmp), args)
    return {"cases": results, "note": "latency ratio = ours/limit (>=1, lower is better); "
                                      "events ratio = ours/limit (<=1, higher is better)"}


def _case(codec_name: str, baud: int, tmp: Path, args) -> dict:
    codec = get_codec(codec_name)
    sim = TurnstileSim(codec_name, tmp / "tty", baudrate=baud, queue_max=100_000).start()
    store = Store(tmp / "state", device="bench", site="bench")
    passages = threading.Semaphore(0)
    append_ms: list[float] = []

    def emit(type, payload, priority, source):
        started = time.perf_counter()
        event = store.append(make_event(device="bench", site="bench", type=type, source=source,
                                        payload=payload, priority=priority))
        if type == "turnstile.passage":
            append_ms.append((time.perf_counter() - started) * 1000)
            passages.release()
        return event

    stopping = threading.Event()
    config = TurnstileConfig(name="bench", kind="turnstile.serial", codec=codec_name, port=sim.path,
                             baudrate=baud)  # default timings, as deployed
    driver = TurnstileDriver(config, DriverContext("bench", emit, structlog.get_logger("bench"), stopping))
    thread = threading.Thread(target=driver.run, daemon=True)
    thread.start()
    try:
        sim.wait_for(lambda: sim.received(m.ReadCounters), 10)
        rtts = _round_trips(driver, args.commands)
        n_events, per_event_bytes = _events_plan(codec, baud, args.seconds)
        events_per_s = _burst(sim, passages, n_events)
    finally:
        stopping.set()
        driver.line.wake()
        thread.join(5)
        driver.close()
        sim.stop()
        store.close()
    return _report(codec, baud, rtts, n_events, events_per_s, per_event_bytes, append_ms)


def _report(codec, baud, rtts, n_events, events_per_s, per_event_bytes, append_ms) -> dict:
    char_ms = 10_000 / baud
    ack_bytes = _ack_exchange_bytes(codec)
    limit_ms = ack_bytes * char_ms
    limit_eps = 1000 / (per_event_bytes * char_ms)
    p50, commit_ms = statistics.median(rtts), statistics.median(append_ms)
    return {
        "baudrate": baud,
        "command_ack_p50_ms": round(p50, 2),
        "command_ack_p95_ms": round(sorted(rtts)[int(len(rtts) * 0.95) - 1], 2),
        "command_ack_line_limit_ms": round(limit_ms, 2),
        "command_ack_ratio": round(p50 / limit_ms, 2),
        "command_bytes_on_line": ack_bytes,
        "events": n_events,
        "events_per_s": round(events_per_s, 1),
        "events_line_limit_per_s": round(limit_eps, 1),
        "events_ratio": round(events_per_s / limit_eps, 3),
        "event_exchange_bytes": per_event_bytes,
        # each event is acknowledged to the device only once it is durable: one store commit each
        "store_append_p50_ms": round(commit_ms, 2),
        "store_commit_limit_per_s": round(1000 / commit_ms, 1),
        # stop-and-wait: line time and commit time add up for every event
        "events_line_plus_commit_limit_per_s": round(1000 / (per_event_bytes * char_ms + commit_ms), 1),
    }


def _round_trips(driver, count: int) -> list[float]:
    out = []
    for i in range(count):
        started = time.perf_counter()
        driver.handle("unlock" if i % 2 else "lock", {})
        out.append((time.perf_counter() - started) * 1000)
    return out


def _ack_exchange_bytes(codec) -> int:
    """Bytes on the wire for one command and its ACK (unlock; the ACK as this codec sends it)."""
    request = len(codec.encode(m.Unlock(), 1))
    ack = len(codec.encode(m.Ack(0x33) if codec.polled else m.Ack(), 1))
    return request + ack


def _events_plan(codec, baud: int, seconds: float) -> tuple[int, int]:
    event = len(codec.encode(m.DeviceEvent(1000, m.EventKind.PASSAGE, "in", 0, 1000, 1_800_000_000), 1))
    # bus: each event is fetched by a poll; p2p: each event waits for its 1-byte ACK (stop-and-wait)
    other = len(codec.encode(m.Poll(999), 1)) if codec.polled else len(codec.encode(m.EventAck(), 1))
    per_event = event + other
    rate = baud / 10 / per_event
    return max(20, int(rate * seconds)), per_event


def _burst(sim, passages: threading.Semaphore, n: int) -> float:
    started = time.perf_counter()
    sim.passage("in", count=n)
    for _ in range(n):
        if not passages.acquire(timeout=30):
            raise RuntimeError("events stopped arriving")
    return n / (time.perf_counter() - started)


def _quiet_logs() -> None:
    import sys

    configure("warning", "json", stream=sys.stderr)
