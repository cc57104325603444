#!/usr/bin/env python3
"""Fleet simulator: N devices (real store + uplink each) in few processes, against a real broker,
a real central ingest and its database, through one scenario. Prints one JSON object.

    scripts/fleet.py broker_restart --devices 200 --processes 4
    scripts/fleet.py bridge_outage --devices 50 --db postgresql://user@host/db

Scenarios: steady, broker_restart (every device reconnects), consumer_crash (the ingest is
killed -9 mid-batch and restarted), bridge_outage (devices on a site broker whose bridge to
central is cut and restored). See docs/fleet.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from services.central.fleet_run import SCENARIOS, run_scenario


def main() -> int:
    parser = argparse.ArgumentParser(prog="fleet.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--processes", type=int, default=4, help="Worker processes hosting the devices.")
    parser.add_argument("--load-s", type=float, default=10.0, help="Seconds of load (the disruption half-way).")
    parser.add_argument("--down-s", type=float, default=3.0, help="How long the disruption lasts.")
    parser.add_argument("--interval-s", type=float, default=2.0, help="Each device appends every this often.")
    parser.add_argument("--batch", type=int, default=2, help="Events per append.")
    parser.add_argument("--db", help="Central database (default: a SQLite file in the work folder).")
    parser.add_argument("--shared", action="store_true", help="Ingest through a $share group.")
    parser.add_argument("--backoff-min-s", type=float, help="Devices' mqtt.backoff_min_s (default: edge's).")
    parser.add_argument("--backoff-max-s", type=float, help="Devices' mqtt.backoff_max_s (default: edge's).")
    parser.add_argument("--workdir", help="Keep everything here (default: a temporary folder, removed).")
    args = parser.parse_args()
    from edge.logs import configure

    configure("warning", "console", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="edge-fleet-") as tmp:
        result = run_scenario(args.scenario, Path(args.workdir or tmp), devices=args.devices,
                              processes=args.processes, load_s=args.load_s, down_s=args.down_s, db_url=args.db,
                              interval_s=args.interval_s, batch=args.batch, shared=args.shared,
                              backoff_min_s=args.backoff_min_s, backoff_max_s=args.backoff_max_s)
    print(json.dumps(result))
    return 0 if result["events_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
