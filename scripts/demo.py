"""Demo: gate + tablet daemons with simulated devices, a broker, and a live view of events."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from edge.testing import DaemonProcess, Mosquitto

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0, help="Stop after this long (0: until Ctrl-C).")
    args = parser.parse_args()
    work = ROOT / "var" / "demo"
    shutil.rmtree(work, ignore_errors=True)
    broker = Mosquitto(work / "broker").start()
    print(f"demo: mosquitto on {broker.uri}")
    devices = {
        "gate": {"device_id": "gate-north-1", "site": "hmp-demo", "role": "gate",
                 "mqtt": {"brokers": [broker.uri]},
                 "drivers": [{"name": "lane1-heartbeat", "kind": "sim.heartbeat", "rate": 2.0,
                              "priority": "telemetry"}]},
        "tablet": {"device_id": "tablet-a-101", "site": "hmp-demo", "role": "tablet",
                   "mqtt": {"brokers": [broker.uri]},
                   "drivers": [{"name": "heartbeat", "kind": "sim.heartbeat", "rate": 0.5}]},
    }
    daemons = [DaemonProcess(work / name, cfg).start() for name, cfg in devices.items()]
    for d in daemons:
        print(f"demo: edge run --config {d.config_path} (log {d.log_path})")
    print("demo: events as the broker receives them (Ctrl-C to stop):")
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        from edge.testing import MqttCollector

        collector = MqttCollector("127.0.0.1", broker.port, "edge/#", session=False).start()
        shown = 0
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            for m in collector.messages[shown:]:
                print(f"  {m.topic}  {m.payload[:160].decode(errors='replace')}")
            shown = len(collector.messages)
        collector.stop()
    except KeyboardInterrupt:
        pass
    finally:
        for d in daemons:
            d.stop()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
