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
    lane = _turnstile(work)
    devices = {
        "gate": {"device_id": "gate-north-1", "site": "hmp-demo", "role": "gate",
                 "mqtt": {"brokers": [broker.uri]},
                 "drivers": [{"name": "lane1-heartbeat", "kind": "sim.heartbeat", "rate": 2.0,
                              "priority": "telemetry"},
                             {"name": "lane1", "kind": "turnstile.serial", "codec": "rs485-bus",
                              "port": lane.path, "baudrate": 9600}]},
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
        lane.stop()
        broker.stop()
    return 0


def _turnstile(work: Path):
    """A simulated turnstile controller on a pty, with people walking through now and then."""
    import threading

    from drivers.sim import turnstile_scenario
    from drivers.sim.turnstile import TurnstileSim

    work.mkdir(parents=True, exist_ok=True)
    lane = TurnstileSim("rs485-bus", work / "tty-lane1", baudrate=9600, auto_pass=True).start()
    steps = turnstile_scenario.parse("wait 3; passage in; wait 4; passage out; wait 3; forced in; "
                                     "wait 4; tailgate in; wait 4; passage in 2") * 100
    threading.Thread(target=turnstile_scenario.run, args=(lane, steps, threading.Event()),
                     daemon=True).start()
    print(f"demo: simulated turnstile on {lane.path}; open it with "
          "`edge --config var/demo/gate/edge.toml turnstile grant lane1 --dir in`")
    return lane


if __name__ == "__main__":
    sys.exit(main())
