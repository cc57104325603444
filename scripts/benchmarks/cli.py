"""CLI answer time: each read-only ``edge`` command, as a field engineer types it, in seconds.

A real gate daemon runs (a serial turnstile on a simulated controller over a pty,
a heartbeat driver, a store with a few thousand events), and each command runs
``--repeat`` times as a fresh process; the median is reported. In the same run a
bare ``python -c pass`` of the same interpreter is timed: the floor no Python CLI
can beat. Lower is better; goal: every command under 0.3 s. ``doctor`` runs with
``--skip broker`` (its network probes wait on the network, not on us).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edge.events import make_event
from edge.store import Store
from edge.testing.daemon import DaemonProcess

GOAL_S = 0.3
COMMANDS = {
    "config check": ["config", "check"],
    "drivers list": ["drivers", "list"],
    "outbox stats": ["outbox", "stats"],
    "turnstile status": ["turnstile", "status", "lane1"],
    "audit verify": ["audit", "verify"],
    "status": ["status"],
    "events tail": ["events", "tail", "-n", "20"],
    "doctor (no network probes)": ["doctor", "--skip", "broker"],
}


def add_arguments(parser) -> None:
    parser.add_argument("--repeat", type=int, default=7, help="Runs of each command (median reported).")
    parser.add_argument("--events", type=int, default=2000, help="Events in the store before the run.")


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def _median(argv: list[str], repeat: int) -> float:
    return statistics.median(_timed(argv) for _ in range(repeat))


def run(args) -> dict:
    from drivers.sim.turnstile import TurnstileSim

    with tempfile.TemporaryDirectory(prefix="edge-bench-cli-") as tmp:
        root = Path(tmp)
        sim = TurnstileSim("rs485-bus", root / "tty-lane1").start()
        config = {"device_id": "gate-bench-1", "site": "site-1", "role": "gate",
                  "state_dir": str(root / "state"), "logging": {"level": "warning", "format": "json"},
                  "drivers": [{"name": "lane1", "kind": "turnstile.serial", "codec": "rs485-bus",
                               "port": str(sim.path), "baudrate": 115200},
                              {"name": "heartbeat", "kind": "sim.heartbeat", "rate": 1.0}]}
        store = Store(root / "state", device="gate-bench-1", site="site-1")
        store.append_many([make_event(device="gate-bench-1", site="site-1", type="sim.heartbeat",
                                      source="heartbeat", payload={"n": i}) for i in range(args.events)])
        store.close()
        daemon = DaemonProcess(root, config).start()
        try:
            base = [sys.executable, "-m", "edge", "--config", str(daemon.config_path)]
            bare_s = _median([sys.executable, "-c", "pass"], args.repeat)
            seconds = {name: round(_median(base + argv, args.repeat), 3) for name, argv in COMMANDS.items()}
        finally:
            daemon.stop()
            sim.stop()
    slowest = max(seconds, key=seconds.get)
    return {"commands_s": seconds, "bare_python_s": round(bare_s, 3), "slowest": slowest,
            "slowest_s": seconds[slowest], "goal_s": GOAL_S,
            "all_under_goal": all(v < GOAL_S for v in seconds.values()),
            "ratio_slowest_to_bare": round(seconds[slowest] / bare_s, 1), "repeat": args.repeat}
