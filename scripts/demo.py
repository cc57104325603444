"""Demo: gate + tablet daemons with simulated devices, a broker, and a live view of events."""

from __future__ import annotations

import argparse
import json
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
    content, tablet_extra = _tablet_content(work, broker)
    devices["tablet"].update(tablet_extra)
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
                for line in _describe(m.topic, m.payload):
                    print(line)
            shown = len(collector.messages)
        collector.stop()
    except KeyboardInterrupt:
        pass
    finally:
        for d in daemons:
            d.stop()
        lane.stop()
        content.stop()
        content.link.stop()
        broker.stop()
    return 0


def _describe(topic: str, payload: bytes) -> list[str]:
    """One readable line per event; other traffic in one short line (chunks as a byte count)."""
    short = topic.removeprefix("edge/v1/")
    if "/events/" in topic or topic.endswith("/cmd/result"):
        try:
            events = json.loads(payload)["events"]
        except (ValueError, KeyError):
            return [f"  {short}  <{len(payload)} bytes, not an event batch>"]
        return [f"  {e['device']:<13} seq {e['seq']:<6} {e['priority']:<9} {e['type']:<26} "
                f"{json.dumps(e['payload'], separators=(',', ':'))[:90]}" for e in events]
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        return [f"  {short}  <{len(payload)} bytes of content>"]
    if not text.isprintable():
        return [f"  {short}  <{len(payload)} bytes of content>"]
    return [f"  {short}  {text[:110]}"]


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


def _tablet_content(work: Path, broker):
    """Central's side for the tablet: a content server with one assigned course, a contacts list."""
    import json
    import os

    from edge import signing
    from edge.learning._link import StandaloneLink
    from edge.learning.server import ContentServer
    from edge.messaging._crypto import generate_seal_keypair

    key_path, pub, _ = signing.generate_keypair(work / "keys", "central")
    _, seal_pub = generate_seal_keypair(work / "keys", "central")
    course = work / "content" / "intro-literacy"
    course.mkdir(parents=True)
    (course / "lesson-1.txt").write_text("Lesson 1: reading signs.\n" * 2000)
    (course / "video-1.mp4").write_bytes(os.urandom(3 * 1024 * 1024))  # stands in for a video
    link = StandaloneLink(broker.uri, client_id="demo-central").start()
    key = signing.load_private_key(key_path)
    server = ContentServer(link, work / "content", "hmp-demo", key).start()
    server.publish_catalog(assignments=[{"course": "intro-literacy", "device": "tablet-a-101"}])
    contacts = {"type": "messaging.contacts", "site": "hmp-demo", "device": "tablet-a-101", "version": 1,
                "issued_at": "2026-01-01T00:00:00+00:00",
                "residents": [{"resident": "res-demo1", "contacts": [{"id": "c-1", "name": "Family"}]}]}
    link.publish("edge/v1/hmp-demo/tablet-a-101/msg/contacts", json.dumps(signing.sign(contacts, key)).encode(),
                 retain=True)
    print("demo: content server for the tablet; try "
          "`edge --config var/demo/tablet/edge.toml learning status` and `... messages stats`")
    return server, {"trust": {"central_keys": [str(pub)]}, "messaging": {"central_seal_key": str(seal_pub)}}


if __name__ == "__main__":
    sys.exit(main())
