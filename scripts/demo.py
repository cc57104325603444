"""Demo: a gate lane deciding with its policy and a tablet in use, on the real daemons, with
simulated devices, a local broker standing in for central, and a live view of what it receives.

At the gate (turnstile simulator on a pty, face camera reading a folder of test photos, the
x-ray scanner emulator): a booked visitor is verified, scanned and let through, and someone
with another visitor's booking is denied. On the tablet a resident writes a message while a
course downloads. ``--once`` stops when all of that has happened (exit 1 if it did not).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from _demo_gate import VISITOR, WRONG_FACE, GateLane, Visits  # scripts/ is sys.path[0]
from _demo_tablet import SITE, TABLET, Resident, central_for_tablet
from _demo_words import describe

from edge.logs import configure_for_tools
from edge.testing import DaemonProcess, Mosquitto, MqttCollector

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0,
                        help="Stop after this long (default: Ctrl-C; with --once: 180).")
    parser.add_argument("--once", action="store_true",
                        help="One visitor and one wrong face, then stop when the tablet is done too.")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "demo",
                        help="Work folder, emptied first (default: var/demo).")
    args = parser.parse_args()
    seconds = args.seconds or (180 if args.once else 0)
    configure_for_tools()  # this process's own log lines: warnings and up, on stderr
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    halt, started = threading.Event(), time.monotonic()
    broker = Mosquitto(work / "broker").start()
    print(f"demo: mosquitto on {broker.uri} stands in for central")
    lane = GateLane(work / "gate-lane")
    content, tablet_extra = central_for_tablet(work, broker, work / "tablet" / "state")
    gate = DaemonProcess(work / "gate", {"device_id": "gate-north-1", "site": SITE, "role": "gate",
                                         "mqtt": {"brokers": [broker.uri]}, **lane.config()})
    tablet = DaemonProcess(work / "tablet", {"device_id": TABLET, "site": SITE, "role": "tablet",
                                             "mqtt": {"brokers": [broker.uri]}, **tablet_extra})
    collector = MqttCollector("127.0.0.1", broker.port, "edge/#", session=False).start()
    lane.enroll(gate.state_dir)
    visits, resident = Visits(lane, gate.state_dir, args.once, halt), Resident(tablet.state_dir, halt)
    try:
        for d, look in ((tablet, "learning status"), (gate, "gate status")):
            d.start(timeout=120)
            print(f"demo: {d.config['device_id']} runs `{EDGE} --config {_rel(d.config_path)} run` "
                  f"(log {_rel(d.log_path)}); try `{EDGE} --config {_rel(d.config_path)} {look}`", flush=True)
        resident.start()
        visits.start()
        print("demo: what central receives, as it arrives (Ctrl-C to stop):", flush=True)
        _live(collector, halt, time.monotonic() + seconds if seconds else None,
              (visits, resident) if args.once else ())
    except KeyboardInterrupt:
        pass
    finally:
        halt.set()
        _stop(gate.stop, tablet.stop, collector.stop, lane.stop, content.stop, content.link.stop, broker.stop)
    print(_where(work, gate, tablet, len(collector.messages)))
    if visits.first_passage:
        print(f"demo: the first visitor went through {visits.first_passage - started:.0f} s after the demo "
              "started (broker, daemons, enrolment included)")
    return _verdict(visits, resident) if args.once else 0


def _stop(*steps) -> None:
    """Every step runs, whatever an earlier one raised (Ctrl-C pressed twice, a daemon slow to stop)."""
    for step in steps:
        try:
            step()
        except (Exception, KeyboardInterrupt) as exc:
            print(f"demo: {step.__qualname__} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _live(collector: MqttCollector, halt: threading.Event, deadline: float | None, waiting: tuple) -> None:
    """Print what the broker receives until the deadline, Ctrl-C, or every waited thread is done."""
    shown = 0
    while deadline is None or time.monotonic() < deadline:
        halt.wait(0.2)
        for m in collector.messages[shown:]:
            for line in describe(m.topic, m.payload):
                print(line, flush=True)
        shown = len(collector.messages)
        if waiting and not any(t.is_alive() for t in waiting):
            halt.wait(1)  # the last events' way to the broker
            waiting = ()
            deadline = time.monotonic()


def _verdict(visits: Visits, resident: Resident) -> int:
    want = {VISITOR[1]: VISITOR[4], WRONG_FACE[1]: WRONG_FACE[4]}
    got = dict(visits.outcomes)
    ok = got == want and resident.message_id and resident.course_bytes
    print(f"demo: {'OK' if ok else 'INCOMPLETE'}: gate decided {got or 'nothing'} (expected {want}); "
          f"message {'composed' if resident.message_id else 'NOT composed'}; course "
          f"{'downloaded' if resident.course_bytes else 'NOT downloaded'}"
          + "".join(f"; {t.name} failed: {t.error}" for t in (visits, resident) if t.error))
    return 0 if ok else 1


def _where(work: Path, gate: DaemonProcess, tablet: DaemonProcess, received: int) -> str:
    from edge.store import StoreReader

    lines = ["demo: stopped. Where the data went:"]
    for d in (gate, tablet):
        if not (d.state_dir / "events.db").exists():
            continue
        reader = StoreReader(d.state_dir, readonly=True)
        try:
            s = reader.stats()
        finally:
            reader.close()
        name, cfg = d.config["device_id"], _rel(d.config_path)
        lines += [f"  {name}: {s['stored']} event{'s' * (s['stored'] != 1)} in {_rel(d.state_dir / 'events.db')} "
                  f"({s['pending']} not yet at the broker); log {_rel(d.log_path)}",
                  f"    read them: `{EDGE} --config {cfg} events tail -n 20`"]
    lines += [f"  {_rel(gate.state_dir)}: also the face gallery (biometrics/, templates sealed), the gate's "
              "approaches and mode (gate.db), the x-ray dose ledger (xray.db)",
              f"  {_rel(tablet.state_dir)}: also the course cache (learning/) and the mailbox (messaging/)",
              f"  central's broker: {received} messages received, its files in {_rel(work / 'broker')}",
              f"  everything: {_rel(work)} (deleted by the next demo; safe to delete)"]
    return "\n".join(lines)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(path)


def _edge_command() -> str:
    """`edge` when the PATH finds this checkout's (scripts/setup.sh links it), else its path."""
    mine = Path(sys.executable).parent / "edge"
    found = shutil.which("edge")
    return "edge" if found and Path(found).resolve() == mine.resolve() else _rel(mine)


EDGE = _edge_command()

if __name__ == "__main__":
    sys.exit(main())
