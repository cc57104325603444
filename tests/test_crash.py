"""Acceptance: kill -9 at 20 random moments under full load loses nothing append() returned for.

The sim drivers write "id seq" to a confirm file after each append() returned (line-buffered,
so the line is in the kernel before the next append starts and survives the SIGKILL). After
all the kills, every confirmed event must be in the store under the same seq, seqs must have
no duplicates and no gaps, and `edge audit verify` must pass. The first cut, and about one
in five of the others, lands while the daemon is still starting up (first migration, WAL
recovery, integrity check) rather than while it appends.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time

from drivers.sim.heartbeat import read_confirmations
from edge.testing.wait import wait_for

KILLS = 20


def _wait_for_appends(paths, at_least: int, timeout: float = 20.0) -> None:
    """Until the drivers have really started appending in this run (a condition, not a nap)."""
    def size() -> int:
        return sum(p.stat().st_size if p.exists() else 0 for p in paths)

    start = size()
    wait_for(lambda: size() >= start + at_least, timeout, "the drivers to append after start", interval=0.01)


def test_sigkill_at_random_moments_loses_no_confirmed_event(edge_daemon, base_config, tmp_path):
    seed = int(os.environ.get("EDGE_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    confirm = [tmp_path / "confirm-a.txt", tmp_path / "confirm-b.txt", tmp_path / "confirm-c.txt"]
    drivers = [
        {"name": "tele", "kind": "sim.heartbeat", "rate": 0, "priority": "telemetry",
         "confirm_file": str(confirm[0])},
        {"name": "norm", "kind": "sim.heartbeat", "rate": 0, "priority": "normal", "payload_bytes": 300,
         "event_type": "sim.normal", "confirm_file": str(confirm[1])},
        {"name": "alarm", "kind": "sim.heartbeat", "rate": 50, "priority": "alarm",
         "event_type": "sim.alarm", "confirm_file": str(confirm[2])},
    ]
    daemon = edge_daemon({**base_config, "drivers": drivers}, start=False)
    started = time.monotonic()
    ready_s, running_kills = [], 0
    for kill in range(KILLS):
        # Most cuts hit a daemon appending at full rate; some hit it while starting up
        # (the first start's schema migration, WAL recovery, the integrity check).
        if kill == 0 or rng.random() < 0.2:
            daemon.start(wait_ready=False)
            time.sleep(rng.uniform(0.0, 1.0))  # the random moment of the power cut
        else:
            t0 = time.monotonic()
            daemon.start()
            ready_s.append(time.monotonic() - t0)
            _wait_for_appends(confirm[:2], at_least=2000)  # bytes: some 40 appends in this run
            time.sleep(rng.uniform(0.0, 0.4))  # the random moment of the power cut
            running_kills += 1
        daemon.kill()
        assert daemon.proc.returncode == -9, (f"kill {kill}: daemon had already exited (seed {seed}):\n"
                                              f"{daemon.log_tail()}")
    elapsed = time.monotonic() - started

    confirmed: dict[str, int] = {}
    for path in confirm:
        confirmed.update(read_confirmations(path))
    with sqlite3.connect(f"file:{daemon.state_dir / 'events.db'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT seq, id FROM events ORDER BY seq").fetchall()
    stored = {event_id: seq for seq, event_id in rows}
    seqs = [seq for seq, _ in rows]

    missing = {i: s for i, s in confirmed.items() if stored.get(i) != s}
    assert not missing, f"{len(missing)} confirmed events lost or moved, e.g. {list(missing.items())[:3]} (seed {seed})"
    assert len(stored) == len(rows), f"duplicate event ids in the store (seed {seed})"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"seq gaps or duplicates (seed {seed})"
    assert len(confirmed) > running_kills * 40

    verify = daemon.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{len(rows)} events checked" in verify.stdout
    print(f"crash test: {KILLS} kills ({KILLS - running_kills} during start-up) in {elapsed:.1f}s, "
          f"{len(confirmed)} confirmed appends, "
          f"{len(rows)} stored, start-up to READY {min(ready_s, default=0):.2f}-{max(ready_s, default=0):.2f}s, seed {seed}")
