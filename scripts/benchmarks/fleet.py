"""Fleet through a broker restart: N simulated devices (real store + uplink each, default 1 000)
in a few processes; the central broker is stopped for a while and started again.

Reported: ``reconnect_all_s`` (broker back up -> every device connected again; lower is
better), ``peak_connects_per_s_share`` (the busiest second's connection attempts, counted
from the broker going down, as a share of the fleet; the goal is <= 0.2: the jittered
back-off must spread the storm), ``events_sent`` (accepted by the devices' stores),
``events_lost`` (checked in the central database by (device, seq); must be 0) and
``duplicates`` (redeliveries the ingest absorbed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from services.central.fleet_run import run_scenario


def add_arguments(parser) -> None:
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=8, help="Worker processes hosting the devices.")
    parser.add_argument("--load-s", type=float, default=20.0)
    parser.add_argument("--down-s", type=float, default=5.0, help="How long the broker stays down.")
    parser.add_argument("--interval-s", type=float, default=5.0, help="Each device appends every this often.")
    parser.add_argument("--shared", action="store_true", help="Ingest through a $share group (see docs/fleet.md).")
    parser.add_argument("--backoff-min-s", type=float, help="Devices' mqtt.backoff_min_s (default: edge's).")
    parser.add_argument("--db", help="Central database URL (default: SQLite in a temporary folder).")


def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge-bench-fleet-") as tmp:
        result = run_scenario("broker_restart", Path(tmp), devices=args.devices, processes=args.processes,
                              load_s=args.load_s, down_s=args.down_s, interval_s=args.interval_s, batch=2,
                              db_url=args.db, shared=args.shared, backoff_min_s=args.backoff_min_s)
    keys = ("devices", "reconnect_all_s", "peak_connects_per_s_share", "events_sent", "events_lost", "duplicates",
            "connect_all_s", "connect_attempts", "peak_connects_per_s", "broker_down_s", "processes", "shared",
            "drain_s")
    return {k: result[k] for k in keys}
