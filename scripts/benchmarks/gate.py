"""Gate policy: from the camera frame that verified a visitor to the turnstile's ACK of the grant.

A real daemon (``edge run``) with a face camera on a folder of real photos and
a serial turnstile on the simulator's pty; the lane's flow is ``verify ->
grant``. For each approach a booking is presented through the control socket
and the chain is read from the stored events: the frame's start is the
``biometric.verified`` event's time minus its ``decision_ms``, the end is the
``turnstile.granted`` event (stamped on the controller's ACK).

The same run measures each stage alone: the face decision by the worker's own
stage timers (``decision_ms``: presence, detection, landmarks, quality,
encoding, 1:1 comparison of that frame), one durable store append, and a
grant sent straight to the turnstile driver through the control socket until
its ACK, interleaved with the approaches so every stage sees the same load.
``ratio`` = chain p50 / sum of the stages (lower is better; 1.0 would mean the
policy costs nothing). ``after_face_ratio`` isolates the policy: the chain
minus the worker's own decision time, over append + grant measured alone
(the rest is the listener queue, the gate.db write and the command router).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the face worker runs

REPO = Path(__file__).resolve().parents[2]
FACES = REPO / "tests" / "data" / "faces"


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=10, help="Approaches timed (after one warm-up).")
    parser.add_argument("--faces", default=str(FACES), help="Folder of the shared photos.")
    parser.add_argument("--baudrate", type=int, default=115200)
    parser.add_argument("--no-card", action="store_true", help="Skip the OSDP card -> relay pulse chain.")


def _ts(event: dict) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class _Events:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir

    def after(self, seq: int, glob: str) -> list[dict]:
        from edge.store import StoreReader

        reader = StoreReader(self.state_dir, readonly=True)
        try:
            return [json.loads(b) for _s, b, _a in reader.tail(100_000, type_glob=glob, after_seq=seq)]
        finally:
            reader.close()

    def last_seq(self) -> int:
        got = self.after(0, "*")
        return got[-1]["seq"] if got else 0

    def wait(self, seq: int, glob: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.after(seq, glob)
            if got:
                return got[0]
            time.sleep(0.01)
        raise TimeoutError(f"no {glob} within {timeout}s")

    def by_id(self) -> dict[str, dict]:
        return {e["id"]: e for e in self.after(0, "*")}


def _enroll(faces: Path, gallery_dir: Path) -> None:
    """Visitor V-1 in the lane's gallery, from biden_1 (the camera shows biden_2)."""
    from drivers.camera.gallery import Gallery, Subject
    from drivers.camera.pipeline import Pipeline, read_image

    template = Pipeline().analyse(read_image(faces / "biden_1.jpg"), use_presence=False).encoding
    gallery = Gallery(gallery_dir)
    gallery.upsert(Subject("V-1", "visitor", [template.astype("<f4").tobytes()],
                           valid_until=time.time() + 24 * 3600))  # the booked visit
    gallery.close()


def _append_alone(runs: int) -> float:
    from edge.events import make_event
    from edge.store import Store

    folder = tempfile.mkdtemp(prefix="gatebench-store-")
    store = Store(Path(folder), device="bench", site="bench")
    try:
        times = []
        for i in range(runs):
            event = make_event(device="bench", site="bench", type="bench.append", source="bench", payload={"i": i})
            started = time.perf_counter()
            store.append(event)
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        store.close()
        shutil.rmtree(folder, ignore_errors=True)


def _config(work: Path, tty: str, baudrate: int) -> dict:
    return {
        "device_id": "bench-gate", "site": "bench", "role": "gate", "state_dir": str(work / "state"),
        "logging": {"level": "warning", "format": "json"},
        # The one-person single-passage override lets the bench send the bare grant below
        # alone (a real site leaves it off: a local grant then waits for a second operator).
        "commands": {"allow_single_person_override": True},
        "drivers": [
            {"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": tty,
             "baudrate": baudrate},
            {"name": "lane1-face", "kind": "camera.face", "source": str(work / "frames"), "loop": True,
             "liveness": "none", "max_fps": 30, "mode": "verify"}],
        "gate": {"lanes": {"lane1": {"turnstile": "lane1-ts", "camera": "lane1-face", "flows": [
            {"direction": "in", "role": "visitor", "steps": [{"kind": "verify", "timeout_s": 30},
                                                             {"kind": "grant", "timeout_s": 5}]}]}}},
    }


def _chain(ev: _Events, state_dir: Path, booking: str) -> tuple[float, float]:
    """(frame -> grant ACK ms, the worker's own decision_ms for that frame)."""
    from edge.commands.local import send

    mark = ev.last_seq()
    send(state_dir, "gate", "present", {"lane": "lane1", "booking_id": booking, "subject_id": "V-1"})
    decision = ev.wait(mark, "gate.decision")
    if decision["payload"]["outcome"] != "grant":
        raise RuntimeError(f"approach {booking} not granted: {decision['payload']['reason']}")
    ids = ev.by_id()
    found = [ids[i] for i in decision["payload"]["evidence"] if i in ids]
    verified = next(e for e in found if e["type"] == "biometric.verified")
    granted = next(e for e in found if e["type"] == "turnstile.granted")
    face_ms = verified["payload"]["decision_ms"]
    return (_ts(granted) - (_ts(verified) - face_ms / 1000)) * 1000, face_ms


def _grant_alone(ev: _Events, state_dir: Path) -> float:
    from edge.commands.local import send

    mark = ev.last_seq()
    sent = time.time()
    send(state_dir, "lane1-ts", "grant", {"direction": "in", "passes": 1, "timeout_s": 5}, "bench",
         single_person=True)
    return (_ts(ev.wait(mark, "turnstile.granted")) - sent) * 1000


def run(args) -> dict:
    from drivers.sim.turnstile import TurnstileSim
    from edge.testing.daemon import DaemonProcess

    faces, runs = Path(args.faces), max(1, args.runs)
    work = Path(tempfile.mkdtemp(prefix="gatebench-"))
    (work / "frames").mkdir()
    shutil.copy(faces / "biden_2.jpg", work / "frames" / "0.jpg")
    _enroll(faces, work / "state")
    sim = TurnstileSim("rs485-bus", work / "tty", baudrate=args.baudrate).start()
    daemon = DaemonProcess(work / "daemon", _config(work, sim.path, args.baudrate))
    chains, faces_in_chain, grants = [], [], []
    try:
        daemon.start(timeout=120)
        ev = _Events(daemon.state_dir)
        _chain(ev, daemon.state_dir, "BK-warmup")  # the worker has its models loaded and the lane is online
        for i in range(runs):
            chain_ms, face_ms = _chain(ev, daemon.state_dir, f"BK-{i}")
            chains.append(chain_ms)
            faces_in_chain.append(face_ms)
            grants.append(_grant_alone(ev, daemon.state_dir))
    finally:
        daemon.stop()
        sim.stop()
        shutil.rmtree(work, ignore_errors=True)
    append_ms = _append_alone(max(runs, 20))
    stages = {"face_decision_ms": round(statistics.median(faces_in_chain), 2), "store_append_ms": round(append_ms, 2),
              "grant_to_ack_ms": round(statistics.median(grants), 2)}
    total = sum(stages.values())
    chain_p50 = statistics.median(chains)
    after_face = [c - f for c, f in zip(chains, faces_in_chain, strict=True)]
    after_alone = stages["store_append_ms"] + stages["grant_to_ack_ms"]
    from benchmarks import _card_pulse
    return {"approaches": runs, "frame_to_grant_ack_ms_p50": round(chain_p50, 2),
            "frame_to_grant_ack_ms_p95": _pct(chains, 0.95), "frame_to_grant_ack_ms_max": round(max(chains), 2),
            "stages_alone_ms": stages, "stages_sum_ms": round(total, 2), "ratio": round(chain_p50 / total, 3),
            "after_face_ms_p50": round(statistics.median(after_face), 2),
            "after_face_alone_ms": round(after_alone, 2),
            "after_face_ratio": round(statistics.median(after_face) / after_alone, 3),
            "baudrate": args.baudrate,
            **({} if args.no_card else {"card_to_pulse": _card_pulse.run(runs, append_ms)})}
