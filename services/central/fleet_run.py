"""Fleet scenarios end to end: devices -> (site broker -> bridge ->) central broker -> ingest -> DB.

``run_scenario`` starts everything on free ports in ``workdir``, runs the load,
applies one disruption half-way (``steady`` has none), drains, and checks the
database by (device, seq) against what every device's store accepted.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections import Counter
from pathlib import Path

from edge.testing.broker import Mosquitto, free_port
from edge.testing.central import IngestProcess
from edge.testing.fleet import Fleet
from edge.testing.netcut import NetCut
from edge.testing.wait import wait_for
from services.central.db import open_db

SCENARIOS = ("steady", "broker_restart", "consumer_crash", "bridge_outage")
BRIDGE_CONF = Path(__file__).resolve().parents[2] / "config" / "mosquitto-site-bridge.conf"


def _plain_bridge(site: str, central_port: int) -> str:
    """The shipped bridge section without TLS (the bridge test covers TLS), to ``central_port``."""
    text = BRIDGE_CONF.read_text()
    bridge = text[text.index("connection "):].replace("hmp-example", site)
    bridge = re.sub(r"^(bridge_cafile|bridge_certfile|bridge_keyfile|bridge_insecure) .*\n", "", bridge, flags=re.M)
    bridge = re.sub(r"^address .*$", f"address 127.0.0.1:{central_port}", bridge, flags=re.M)
    return re.sub(r"^restart_timeout .*$", "restart_timeout 1 2", bridge, flags=re.M)


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, flags=re.M)
    return float(match.group(1)) if match else 0.0


def run_scenario(scenario: str, workdir: Path, *, devices: int = 50, processes: int = 2, load_s: float = 6.0,
                 down_s: float = 3.0, db_url: str | None = None, interval_s: float = 2.0, batch: int = 2,
                 backoff_min_s: float | None = None, backoff_max_s: float | None = None,
                 shared: bool = False) -> dict:
    """One scenario; ``shared`` runs the ingest in a $share group (mosquitto 2.0 loses what arrives
    between a broker restart and the group's re-subscription: docs/fleet.md)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    workdir = Path(workdir)
    started = []
    central = Mosquitto(workdir / "central").start()
    started.append(central.stop)
    device_broker, wan = central, None
    try:
        if scenario == "bridge_outage":
            wan = NetCut(central.port).start()
            started.append(wan.cut)
            device_broker = Mosquitto(workdir / "site", extra=_plain_bridge("fleet", wan.port)).start()
            started.append(device_broker.stop)
        db_url = db_url or str(workdir / "central.db")
        port = free_port()
        ingest = IngestProcess(workdir / "ingest", central.uri, db_url, "--metrics-listen", f"127.0.0.1:{port}",
                               "--batch-max", "2000", *([] if shared else ["--no-share"])).start()
        started.append(ingest.stop)
        fleet = Fleet(workdir / "fleet", device_broker.uri, devices, processes=processes, interval_s=interval_s,
                      batch=batch, backoff_min_s=backoff_min_s, backoff_max_s=backoff_max_s).start()
        started.append(fleet.stop)
        boot = time.time()
        wait_for(lambda: fleet.fresh_status(time.time() - 0.1)["connected"] == devices,
                 60 + devices * 0.2, f"all {devices} devices connected", interval=0.1)
        result = {"scenario": scenario, "devices": devices, "processes": len(fleet.specs), "shared": shared,
                  "connect_all_s": round(time.time() - boot, 2)}
        time.sleep(load_s / 2)  # steady load before the disruption (a duration, not a sync)
        result.update(_disrupt(scenario, central, ingest, wan, fleet, devices, down_s))
        time.sleep(load_s / 2)
        fleet.pause()
        result.update(_drain_and_check(fleet, db_url, port, devices))
        return result
    finally:
        for stop in reversed(started):
            stop()


def _disrupt(scenario, central, ingest, wan, fleet: Fleet, devices: int, down_s: float) -> dict:
    t0 = time.time()
    if scenario == "steady":
        return {}
    if scenario == "consumer_crash":
        ingest.kill()
        time.sleep(down_s)  # the consumer stays down this long (a scenario duration)
        ingest.start()
        return {"consumer_down_s": down_s}
    if scenario == "bridge_outage":
        wan.cut()
        time.sleep(down_s)
        wan.restore()
        return {"bridge_down_s": down_s}
    central.stop()
    time.sleep(down_s)
    central.start()
    up = time.time()
    wait_for(lambda: fleet.fresh_status(time.time() - 0.1)["connected"] == devices,
             120 + devices * 0.2, "every device reconnected", interval=0.2)
    all_back = time.time()
    attempts = [t for t in fleet.status()["attempts"] if t >= t0]
    per_s = Counter(int(t - t0) for t in attempts)
    peak = max(per_s.values()) if per_s else 0
    return {"broker_down_s": down_s, "reconnect_all_s": round(all_back - up, 2),
            "connect_attempts": len(attempts), "peak_connects_per_s": peak,
            "peak_connects_per_s_share": round(peak / devices, 3)}


def _drain_and_check(fleet: Fleet, db_url: str, port: int, devices: int) -> dict:
    paused = time.time()
    status = wait_for(lambda: (s := fleet.fresh_status(time.time() - 0.1))["acked"] >= s["sent"] and s,
                      120 + devices * 0.2, "every device's outbox acked", interval=0.1)
    drained_s = time.time() - paused
    db = open_db(db_url)
    try:
        sent = status["appended"]
        total = sum(sent.values())
        count = lambda: db.query("SELECT COUNT(*) FROM events WHERE site = %s", ("fleet",))[0][0]  # noqa: E731
        try:
            wait_for(lambda: count() >= total, 120, "every event in the database", interval=0.5)
        except AssertionError:
            pass  # reported as events_lost below
        rows = db.query("SELECT device, COUNT(*), MAX(seq) FROM events WHERE site = %s GROUP BY device", ("fleet",))
        have = {r[0]: (r[1], r[2]) for r in rows}
        lost = sum(max(0, n - have.get(d, (0, 0))[0]) for d, n in sent.items())
        wrong = [d for d, n in sent.items() if have.get(d, (0, 0)) != (n, n)]
        return {"events_sent": total, "events_lost": lost, "devices_with_mismatch": len(wrong),
                "duplicates": int(_metric(port, "edge_central_duplicates_total")),
                "drain_s": round(drained_s, 2)}
    finally:
        db.close()
