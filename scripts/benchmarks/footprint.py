"""Idle footprint: RSS and CPU of ``edge run`` in the tablet role, sim driver at 1 event/s.

The daemon runs the tablet's full component set (uplink to a real local
mosquitto, command router, learning, messaging, the local API socket) with one
``sim.heartbeat`` driver. After start-up (sd_notify READY) and a short warm-up,
CPU time and RSS are sampled over ``--seconds`` of wall time. In the same run a
bare Python that only imports sqlite3, paho-mqtt and threading is measured as
the reference. Lower is better for every figure; ``ratio`` = our RSS / the bare
Python's RSS. Goals: under 0.5 % of one core and under 50 MB RSS.

``cryptography`` (about 9 MB resident) is loaded on first use, so after the
window one signed command is sent over MQTT and the RSS once it has run is
reported too (``rss_mb_after_signed_command``): what a tablet costs once
central has talked to it.

``--role gate`` measures a gate with biometrics instead: the daemon and its
face worker, on simulated lane devices (scripts/benchmarks/_footprint_gate.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from edge import signing
from edge.commands.build import build_command
from edge.commands.publish import publish_command
from edge.store import StoreReader
from edge.testing.broker import Mosquitto
from edge.testing.daemon import DaemonProcess

_BARE = "import sqlite3, threading, paho.mqtt.client, sys; sys.stdin.read()"
_WARMUP_S = 3.0
_DEVICE, _SITE = "tablet-bench-1", "site-1"


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=60.0, help="Measurement window (wall seconds).")
    parser.add_argument("--rate", type=float, default=1.0, help="sim.heartbeat events per second.")
    parser.add_argument("--no-broker", action="store_true", help="Run without MQTT (no uplink).")
    parser.add_argument("--role", choices=("tablet", "gate"), default="tablet",
                        help="gate: a gate with biometrics, daemon and its face worker summed "
                             "(scripts/benchmarks/_footprint_gate.py).")
    parser.add_argument("--python", default=sys.executable,
                        help="--role gate: the gate's interpreter (default: this one), e.g. a venv made "
                             "from requirements-gate.lock, to measure it without the development packages.")


def _config(root: Path, broker: Mosquitto | None, rate: float) -> dict:
    from services.messaging._crypto import generate_seal_keypair

    _, central_pub, _ = signing.generate_keypair(root / "keys", "central")
    _, seal_pub = generate_seal_keypair(root / "keys", "central-seal")
    config = {
        "device_id": _DEVICE, "site": _SITE, "role": "tablet",
        "state_dir": str(root / "state"),
        "logging": {"level": "info", "format": "json"},
        "trust": {"central_keys": [str(central_pub)]},
        "messaging": {"central_seal_key": str(seal_pub)},
        "drivers": [{"name": "heartbeat", "kind": "sim.heartbeat", "rate": rate}],
    }
    if broker is not None:
        config["mqtt"] = {"brokers": [broker.uri]}
    return config


class _Sampler:
    """CPU seconds, context switches and RSS of one process over a window."""

    def __init__(self, pid: int):
        self.proc = psutil.Process(pid)
        self.rss_max = 0

    def mark(self) -> tuple[float, int, float]:
        cpu = self.proc.cpu_times()
        return cpu.user + cpu.system, self._switches(), time.monotonic()

    def _switches(self) -> int:
        """Context switches of every thread: each wake-up of any thread counts once."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        total += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
        return total

    def sample_rss(self) -> int:
        rss = self.proc.memory_info().rss
        self.rss_max = max(self.rss_max, rss)
        return rss


def _window(samplers: dict[str, _Sampler], seconds: float) -> dict[str, dict]:
    start = {name: s.mark() for name, s in samplers.items()}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        for s in samplers.values():
            s.sample_rss()
        time.sleep(min(1.0, left))  # the benchmark wakes once a second; the daemon is not asked
    out = {}
    for name, s in samplers.items():
        cpu0, sw0, t0 = start[name]
        cpu1, sw1, t1 = s.mark()
        full = s.proc.memory_full_info()
        out[name] = {
            "cpu_percent_of_one_core": round((cpu1 - cpu0) / (t1 - t0) * 100, 3),
            "cpu_s": round(cpu1 - cpu0, 3),
            "wakeups_per_s": round((sw1 - sw0) / (t1 - t0), 1),
            "rss_mb": round(s.sample_rss() / 2**20, 1),
            "rss_mb_max": round(s.rss_max / 2**20, 1),
            "uss_mb": round(full.uss / 2**20, 1),
            "threads": s.proc.num_threads(),
        }
    return out


def run(args) -> dict:
    if args.role == "gate":
        from benchmarks._footprint_gate import run as run_gate

        return run_gate(args)
    with tempfile.TemporaryDirectory(prefix="edge-bench-footprint-") as tmp:
        root = Path(tmp)
        broker = None if args.no_broker else Mosquitto(root / "broker").start()
        daemon = DaemonProcess(root / "daemon", _config(root, broker, args.rate))
        bare = subprocess.Popen([sys.executable, "-c", _BARE], stdin=subprocess.PIPE)
        try:
            daemon.start(timeout=60)
            time.sleep(_WARMUP_S)  # let start-up work (first publish, status file) finish
            stored_before = _stats(daemon.state_dir)["next_seq"]
            figures = _window({"edge": _Sampler(daemon.proc.pid), "bare": _Sampler(bare.pid)},
                              args.seconds)
            stored_after = _stats(daemon.state_dir)["next_seq"]
            acked = _stats(daemon.state_dir)["acked_total"]
            after_command = _rss_after_signed_command(root, broker, daemon) if broker is not None else None
        finally:
            bare.communicate(b"")
            exit_code = daemon.stop()
            if broker is not None:
                broker.stop()
    ours, ref = figures["edge"], figures["bare"]
    return {
        "seconds": args.seconds,
        "event_rate_per_s": args.rate,
        "events_stored_in_window": stored_after - stored_before,
        "events_acked_by_broker": acked if broker is not None else None,
        "cpu_percent_of_one_core": ours["cpu_percent_of_one_core"],
        "rss_mb": ours["rss_mb"],
        "rss_mb_max": ours["rss_mb_max"],
        "uss_mb": ours["uss_mb"],
        "rss_mb_after_signed_command": after_command,
        "wakeups_per_s": ours["wakeups_per_s"],
        "threads": ours["threads"],
        "bare_python_rss_mb": ref["rss_mb"],
        "bare_python_cpu_percent_of_one_core": ref["cpu_percent_of_one_core"],
        "ratio": round(ours["rss_mb"] / ref["rss_mb"], 2),
        "goal_cpu_ok": ours["cpu_percent_of_one_core"] < 0.5,
        "goal_rss_ok": ours["rss_mb_max"] < 50,
        "clean_stop": exit_code == 0,
        "cpus": os.cpu_count(),
    }


def _rss_after_signed_command(root: Path, broker: Mosquitto, daemon: DaemonProcess) -> float:
    """Send one signed ping, wait for its result in the store, return the daemon's RSS (MB)."""
    key = signing.load_private_key(root / "keys" / "central.key")
    doc = build_command(target="heartbeat", name="ping", device=_DEVICE, site=_SITE, keys=[key])
    publish_command(broker.uri, _SITE, _DEVICE, doc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reader = StoreReader(daemon.state_dir)
        try:
            if any(doc["id"].encode() in bytes(row[1]) for row in reader.tail(20, type_glob="command.result")):
                time.sleep(0.5)  # let the result's publish settle
                return round(psutil.Process(daemon.proc.pid).memory_info().rss / 2**20, 1)
        finally:
            reader.close()
        time.sleep(0.2)
    raise RuntimeError(f"the signed command {doc['id']} got no result within 20 s; see {daemon.log_tail()}")


def _stats(state_dir: Path) -> dict:
    reader = StoreReader(state_dir)
    try:
        return reader.stats()
    finally:
        reader.close()
