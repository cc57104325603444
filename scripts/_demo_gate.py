"""The demo's gate lane: a turnstile simulator on a pty, a face camera reading a folder, the
x-ray scanner emulator's result folder, the gate policy, and the people who walk up to it.

Everything the lane does goes through the real daemon (``edge run``): the booking is presented
on its control socket (what `edge gate present` does), the camera driver verifies the face in
its worker, the policy waits for the scan and opens the turnstile.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "data" / "faces"
LANE = "lane1"
# (subject, booking, who is enrolled for it, who stands at the camera, expected outcome)
VISITOR = ("V-1", "BK-1001", "biden", "biden", "grant")
WRONG_FACE = ("V-2", "BK-1002", "kit_harington", "alex_lacamoire", "deny")


class GateLane:
    """The lane's hardware stand-ins and its configuration for the gate daemon."""

    def __init__(self, work: Path):
        from drivers.sim.turnstile import TurnstileSim

        self.work = work
        self.frames, self.inbox = work / "camera", work / "scanner-inbox"
        self.frames.mkdir(parents=True)
        self.inbox.mkdir()
        self.turnstile = TurnstileSim("rs485-bus", work / "tty-lane1", baudrate=9600, auto_pass=True).start()
        _write_empty_scene(self.frames / "0.jpg")

    def config(self) -> dict:
        """The lane's drivers and [gate] section, as in config/gate.example.toml."""
        drivers = [
            {"name": "lane1", "kind": "turnstile.serial", "codec": "rs485-bus",
             "port": self.turnstile.path, "baudrate": 9600},
            # Still photos never move: the motion liveness check would (rightly) refuse them.
            {"name": "lane1-face", "kind": "camera.face", "source": str(self.frames), "loop": True,
             "liveness": "none", "max_fps": 10},
            {"name": "scanner1", "kind": "xray.folder", "path": str(self.inbox), "poll_s": 0.2, "settle_s": 0.1},
        ]
        grant = {"kind": "grant", "passes": 1, "timeout_s": 10}
        gate = {"hold_timeout_s": 600, "lanes": {LANE: {
            "turnstile": "lane1", "camera": "lane1-face", "scanners": ["scanner1"], "flows": [
                {"direction": "in", "role": "visitor", "steps": [
                    {"kind": "verify", "timeout_s": 30},
                    {"kind": "dose_check", "on_fail": "hold"},
                    {"kind": "xray", "timeout_s": 60, "on_fail": "hold"},
                    grant]},
                {"direction": "out", "role": "any", "steps": [grant]}]}}}
        return {"drivers": drivers, "gate": gate}

    def enroll(self, state_dir: Path) -> None:
        """Book the visitors: each booking's subject enrolled from a photo, valid for the day."""
        from drivers.camera.gallery import Gallery, Subject
        from drivers.camera.pipeline import Pipeline, read_image

        pipeline, gallery = Pipeline(), Gallery(state_dir)
        try:
            for subject, booking, enrolled, _, _ in (VISITOR, WRONG_FACE):
                a = pipeline.analyse(read_image(FACES / f"{enrolled}_1.jpg"), use_presence=False)
                if a.status != "ok":
                    raise RuntimeError(f"{enrolled}_1.jpg gave no usable face ({a.status})")
                gallery.upsert(Subject(subject, "visitor", [a.encoding.astype("<f4").tobytes()],
                                       valid_until=time.time() + 86400))
                print(f"demo: booking {booking} for visitor {subject}, enrolled from {enrolled}_1.jpg "
                      f"(like `edge biometrics enroll --reason ... --subject {subject} --role visitor --valid-until ...`)")
        finally:
            gallery.close()

    def show(self, who: str | None) -> None:
        """What the lane camera sees from now on: a person's second photo, or the empty lane."""
        tmp = self.frames / ".next.jpg.tmp"
        if who is None:
            _write_empty_scene(tmp)
        else:
            shutil.copy(FACES / f"{who}_2.jpg", tmp)
        os.replace(tmp, self.frames / "0.jpg")

    def scan(self, subject: str) -> None:
        """The x-ray operator scans the person: the scanner emulator writes its result file."""
        from drivers.sim.xray import ScannerSim

        sim = ScannerSim(scanner="SIM-XR-1", subject=subject, dose_usv=2.5)
        sim.write_json(self.inbox, sim.record("clear"))

    def stop(self) -> None:
        self.turnstile.stop()


def _write_empty_scene(path: Path) -> None:
    """A plain grey frame: nobody at the lane."""
    import cv2
    import numpy as np

    ok, data = cv2.imencode(".jpg", np.full((480, 640, 3), 120, np.uint8))
    path.write_bytes(data.tobytes())


class Visits(threading.Thread):
    """People walking up to the lane, one after the other, until stopped (or once)."""

    def __init__(self, lane: GateLane, state_dir: Path, once: bool, stop: threading.Event):
        super().__init__(daemon=True, name="demo-visits")
        self.lane, self.state_dir, self.once, self.halt = lane, state_dir, once, stop
        self.outcomes: list[tuple[str, str]] = []  # (booking, outcome) as the gate decided
        self.first_passage: float | None = None  # time.monotonic() of the first visitor's passage
        self.error: str | None = None

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                for person in (VISITOR, WRONG_FACE):
                    self.visit(*person)
                if self.once:
                    return
                self.halt.wait(8)
        except Exception as exc:  # shown by the demo at the end instead of dying silently
            self.error = f"{type(exc).__name__}: {exc}"

    def visit(self, subject: str, booking: str, _enrolled: str, face: str, _expected: str) -> None:
        from edge.commands.local import send

        mark = self._last_seq()
        print(f"demo: at {LANE}, {face.replace('_', ' ')} shows booking {booking} "
              f"(`edge gate present {LANE} --booking {booking} --subject {subject}`)", flush=True)
        reply = send(self.state_dir, "gate", "present", {"lane": LANE, "direction": "in",
                                                          "booking_id": booking, "subject_id": subject}, None)
        if reply.get("status") != "ok":
            raise RuntimeError(f"gate present refused: {reply}")
        self.lane.show(face)
        scanned = False
        while (d := self._decision(mark)) is None:
            if not scanned and self._event("gate.dose_check", mark):
                print(f"demo: the x-ray operator scans {subject}", flush=True)
                self.lane.scan(subject)
                scanned = True
            if self.halt.wait(0.1):
                return
        outcome = d["payload"]["outcome"]
        self.outcomes.append((booking, outcome))
        if outcome == "grant" and self._wait("gate.passage", d["seq"]) and self.first_passage is None:
            self.first_passage = time.monotonic()
        elif outcome == "hold":  # e.g. the dose limit, after a long demo: the officer sends them back
            print(f"demo: the officer sends {subject} back (`edge gate override {LANE} --deny --reason ...`)")
            send(self.state_dir, "gate", "override", {"lane": LANE, "direction": "in", "action": "deny",
                                                       "reason": "demo: held, sent back"}, "demo: held")
        self.halt.wait(1.5)
        self.lane.show(None)
        self.halt.wait(1.5)

    def _wait(self, glob: str, after: int, timeout: float = 30) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.halt.is_set():
            if found := self._event(glob, after):
                return found
            self.halt.wait(0.1)
        return None

    def _decision(self, after: int) -> dict | None:
        return self._event("gate.decision", after)

    def _event(self, glob: str, after: int) -> dict | None:
        from edge.store import StoreReader

        reader = StoreReader(self.state_dir, readonly=True)
        try:
            rows = reader.tail(1, type_glob=glob, after_seq=after)
        finally:
            reader.close()
        return json.loads(rows[0][1]) if rows else None

    def _last_seq(self) -> int:
        from edge.store import StoreReader

        reader = StoreReader(self.state_dir, readonly=True)
        try:
            rows = reader.tail(1)
        finally:
            reader.close()
        return json.loads(rows[-1][1])["seq"] if rows else 0
