#!/usr/bin/env python3
"""Conformance run for a central consumer: publish what devices send, in the awkward ways the
contract allows, then check what the consumer stored.

    scripts/conformance.py --broker mqtt://broker:1883 --report-cmd "my-consumer-report"
    scripts/conformance.py --broker mqtt://127.0.0.1:1883 --edge-central-db central.db

It plays one site ("conformance") with a few devices: batches of several families, the
same message delivered twice (at-least-once), a gap that is filled later, a command
result that takes a seq between events, an event type nobody knows, a replaced store
(seq starts at 1 again under a new store id), a retained birth and a death.
Then it runs ``--report-cmd`` (your consumer's view, JSON on stdout:
``{"events": [{"device", "store", "seq", "id"}, ...], "devices": [{"device", "online"}, ...]}``)
or reads an ``edge central`` database, and prints one JSON result; exit 0 when it conforms.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.testing.central import Publisher, event

SITE = "conformance"


def _run_id() -> str:
    return uuid.uuid4().hex[:6]


def play(pub: Publisher, tag: str) -> dict:
    """Publish the scenario; returns what a conforming consumer ends up with."""
    gate, tab = f"gate-{tag}", f"tab-{tag}"
    g = {s: event(gate, SITE, s, "turnstile.passage", lane=1) for s in range(1, 8)}
    g[4] = {**event(gate, SITE, 4, "command.result"), "payload": {"id": "cmd-1", "status": "ok"}}
    g[6] = event(gate, SITE, 6, "future.thing_nobody_knows", x=1)
    old, new = f"store-a-{tag}", f"store-b-{tag}"
    pub.batch(SITE, gate, [g[1], g[2]], store=old)
    pub.batch(SITE, gate, [g[1], g[2]], store=old)                      # redelivered: a duplicate
    pub.batch(SITE, gate, [g[5]], store=old, topic=f"edge/v1/{SITE}/{gate}/events/turnstile")
    pub.batch(SITE, gate, [g[3]], store=old, topic=f"edge/v1/{SITE}/{gate}/events/turnstile")  # fills 3
    pub.batch(SITE, gate, [g[4]], store=old, topic=f"edge/v1/{SITE}/{gate}/cmd/result")       # fills 4
    pub.batch(SITE, gate, [g[6]], store=old, topic=f"edge/v1/{SITE}/{gate}/events/future")
    pub.batch(SITE, gate, [g[7]], store=old)
    t = {s: event(tab, SITE, s, "learning.statement") for s in (1, 2)}
    pub.batch(SITE, tab, [t[1], t[2]], store=old)
    t2 = {s: event(tab, SITE, s, "learning.statement") for s in (1, 2)}  # the store was replaced
    pub.batch(SITE, tab, [t2[1], t2[2]], store=new)
    birth = {"online": True, "device": tab, "site": SITE, "role": "tablet", "version": "0.1.0", "boot_seq": 1,
             "started_at": "2026-01-01T00:00:00Z", "ts": "2026-01-01T00:00:01Z", "store_id": new}
    pub.send(f"edge/v1/{SITE}/{tab}/state", json.dumps(birth).encode(), retain=True)
    death = {k: v for k, v in birth.items() if k != "ts"} | {"online": False, "reason": "shutdown"}
    pub.send(f"edge/v1/{SITE}/{gate}/state", json.dumps({**death, "device": gate, "role": "gate"}).encode(),
             retain=True)
    expected = {(gate, old, s): g[s]["id"] for s in g} | {(tab, old, s): t[s]["id"] for s in t} \
        | {(tab, new, s): t2[s]["id"] for s in t2}
    return {"events": expected, "online": {gate: False, tab: True}}


def _edge_central_report(db_url: str) -> dict:
    from services.central.db import open_db

    db = open_db(db_url)
    rows = db.query("SELECT device, store, seq, id FROM events WHERE site = %s", (SITE,))
    devices = [{"device": d["device"], "online": d["online"]} for d in db.devices() if d["site"] == SITE]
    db.close()
    return {"events": [{"device": r[0], "store": r[1], "seq": r[2], "id": r[3]} for r in rows], "devices": devices}


def check(expected: dict, report: dict) -> list[str]:
    problems = []
    got: dict = {}
    for e in report.get("events", []):
        key = (e["device"], e.get("store") or "", e["seq"])
        if key in got:
            problems.append(f"duplicate stored: {key}")
        got[key] = e["id"]
    mine = {k: v for k, v in got.items() if k[0] in {d for d, _, _ in expected["events"]}}
    for key, id_ in expected["events"].items():
        if key not in mine:
            problems.append(f"missing: device={key[0]} store={key[1]} seq={key[2]}")
        elif mine[key] != id_:
            problems.append(f"wrong event at {key}")
    for key in set(mine) - set(expected["events"]):
        problems.append(f"unexpected: {key}")
    online = {d["device"]: d["online"] for d in report.get("devices", [])}
    for device, want in expected["online"].items():
        if online.get(device) is not want:
            problems.append(f"device {device}: online should be {want}, is {online.get(device)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(prog="conformance.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True, help="mqtt://host:port (plain; the script is a test device)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--report-cmd", help="Command printing the consumer's view as JSON (see above).")
    src.add_argument("--edge-central-db", help="Read an `edge central ingest` database instead.")
    parser.add_argument("--wait-s", type=float, default=30.0, help="How long the consumer may take.")
    args = parser.parse_args()
    host, _, port = args.broker.split("://", 1)[1].rpartition(":")
    pub = Publisher(int(port), host=host)
    expected = play(pub, _run_id())
    pub.close()
    deadline = time.monotonic() + args.wait_s
    while True:
        if args.edge_central_db:
            report = _edge_central_report(args.edge_central_db)
        else:
            out = subprocess.run(shlex.split(args.report_cmd), capture_output=True, text=True, timeout=60)
            report = json.loads(out.stdout or "{}")
        problems = check(expected, report)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(json.dumps({"conforms": not problems, "expected_events": len(expected["events"]), "problems": problems}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
