"""Shared pieces of the gate tests: one lane of real simulators around a real daemon."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from drivers.sim.turnstile import TurnstileSim
from drivers.sim.xray import ScannerSim
from edge.store import StoreReader
from tests._face_helpers import photo, template

STAFF, VISITOR, OTHER, OVER = "obama", "biden", "kit_harington", "rose_leslie"


def lane_config(tmp_path: Path, sim: TurnstileSim, *, xray_timeout_s: float = 5.0) -> dict:
    """Drivers and [gate] of one lane: turnstile, face camera on a folder, scanner result folder."""
    frames, inbox = tmp_path / "frames", tmp_path / "scanner"
    frames.mkdir(exist_ok=True)
    inbox.mkdir(exist_ok=True)
    drivers = [
        {"name": "lane1-ts", "kind": "turnstile.serial", "codec": "rs485-bus", "port": sim.path,
         "baudrate": 115200, "reconnect_max_s": 0.5},
        {"name": "lane1-face", "kind": "camera.face", "source": str(frames), "loop": True,
         "liveness": "none", "max_fps": 10},
        {"name": "scanner1", "kind": "xray.folder", "path": str(inbox), "poll_s": 0.1, "settle_s": 0.1},
    ]
    gate = {"hold_timeout_s": 60, "lanes": {"lane1": {
        "turnstile": "lane1-ts", "camera": "lane1-face", "scanners": ["scanner1"], "flows": [
            {"direction": "in", "role": "visitor", "steps": [
                {"kind": "verify", "timeout_s": 20},
                {"kind": "dose_check", "on_fail": "hold"},
                {"kind": "xray", "timeout_s": xray_timeout_s, "on_fail": "hold"},
                {"kind": "grant", "timeout_s": 5}]},
            {"direction": "in", "role": "staff", "steps": [{"kind": "identify"}, {"kind": "grant", "timeout_s": 5}]},
            {"direction": "out", "role": "any", "steps": [{"kind": "grant", "timeout_s": 5}]}]}}}
    return {"drivers": drivers, "gate": gate}


def enroll(state_dir: Path, visit_s: float = 3600) -> None:
    """Staff obama; visitors V-1 (biden), V-2 (kit_harington), V-3 (rose_leslie), each booked for
    ``visit_s`` from now by the wall clock. Encodings are cached."""
    from drivers.camera.gallery import Gallery, Subject

    g = Gallery(state_dir)
    try:
        g.upsert(Subject("S-1", "staff", [template(f"{STAFF}_1")]))
        for sid, who in (("V-1", VISITOR), ("V-2", OTHER), ("V-3", OVER)):
            g.upsert(Subject(sid, "visitor", [template(f"{who}_1")], valid_until=time.time() + visit_s))
    finally:
        g.close()


def show(tmp_path: Path, who: str) -> None:
    """What the lane camera sees from now on (atomically replaced)."""
    tmp = tmp_path / "frames" / ".next"
    shutil.copy(photo(f"{who}_2"), tmp)
    os.replace(tmp, tmp_path / "frames" / "0.jpg")


def show_nobody(tmp_path: Path) -> None:
    """The lane empties: a flat frame (no face), which ends the approach in progress."""
    import cv2
    import numpy as np

    tmp = tmp_path / "frames" / ".next"  # no image suffix: the folder source skips it until renamed
    tmp.write_bytes(cv2.imencode(".jpg", np.full((480, 640, 3), 120, np.uint8))[1].tobytes())
    os.replace(tmp, tmp_path / "frames" / "0.jpg")


def scan(tmp_path: Path, subject: str, scenario: str = "clear", dose_usv: float = 2.5) -> dict:
    sim = ScannerSim(scanner="SIM-XR-1", subject=subject, dose_usv=dose_usv)
    rec = sim.record(scenario)
    sim.write_json(tmp_path / "scanner", rec)
    return rec


def events(state_dir: Path, glob: str = "*", after: int = 0) -> list[dict]:
    if not (Path(state_dir) / "events.db").exists():
        return []
    reader = StoreReader(state_dir, readonly=True)
    try:
        return [json.loads(body) for _s, body, _a in reader.tail(100_000, type_glob=glob, after_seq=after)]
    finally:
        reader.close()


def wait_event(state_dir: Path, glob: str, pred=lambda e: True, *, after: int = 0, timeout: float = 30.0,
               what: str = "event") -> dict:
    """The first stored event matching ``glob`` and ``pred`` with seq > ``after``; polls the store."""
    deadline = time.monotonic() + timeout
    while True:
        for e in events(state_dir, glob, after):
            if pred(e):
                return e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def last_seq(state_dir: Path) -> int:
    """The newest stored event's seq (0 for none): one row read, not the whole store."""
    if not (Path(state_dir) / "events.db").exists():
        return 0
    reader = StoreReader(state_dir, readonly=True)
    try:
        newest = reader.tail(1)
    finally:
        reader.close()
    return newest[-1][0] if newest else 0


def by_id(state_dir: Path) -> dict[str, dict]:
    return {e["id"]: e for e in events(state_dir)}
