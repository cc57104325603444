"""Visitors: the face at the exit must be the face that came in, and every visitor must come out.

At a visitor's entry the lane camera keeps the verified face (in the face
worker's memory only: see drivers/camera/entries.py); at the exit it compares
the face with that one, not with the booking. A mismatch is the worst event at
a visiting gate (a prisoner leaving in a visitor's place): the lane is held for
an officer, ``gate.swap_suspected`` is raised with the evidence, and nothing is
granted. A visitor's entry face is destroyed once they are out, and every one
at the end of a visiting session, when everyone still inside is listed in a
``gate.session_unbalanced`` alarm.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from services.gate.approach import Approach

log = structlog.get_logger("edge.gate")
#: Camera refusals that mean "not the face that came in on this booking" (drivers.camera.entries).
SWAP_REASONS = frozenset({"not_the_entry_face", "entry_face_of_another_subject"})


class Visits:
    def __init__(self, engine, state_dir: Path):
        self.engine = engine
        self._path = Path(state_dir) / "gate-sessions.json"
        try:  # sessions already closed: a restart must not close (and alarm) them again
            self._ended = {tuple(k) for k in json.loads(self._path.read_text())}
        except (OSError, ValueError, TypeError):
            self._ended = set()

    def verify_args(self, ap: Approach) -> dict[str, Any]:
        """What the camera must do with a visitor's face besides the 1:1 check."""
        if ap.role != "visitor":
            return {}
        return {"entry": "keep" if ap.direction == "in" else "compare"}

    def swap_suspected(self, ap: Approach, event) -> None:
        """The face is not the face that came in on this booking: hold, alarm, never grant.

        At the exit that is a possible swap; at an entry, the booking's entry face is kept for
        another person (someone else walking in on it, to walk out on it later)."""
        engine, p = self.engine, event.payload
        if p.get("reason") == "entry_face_of_another_subject":
            what = (f"booking {ap.booking_id} already has an entry face, of another subject than {ap.subject}: "
                    "it is never replaced")
        else:
            where = "exit" if ap.direction == "out" else "entry"
            what = (f"the face at the {where} is not the face verified at entry for booking {ap.booking_id} "
                    f"(distance {p.get('distance')} > {p.get('threshold')})")
        detail = f"{what}: possible swap; held for an officer"
        if ap.record is not None:
            ap.record.end("failed", detail, [event.id])
        engine.emit("gate.swap_suspected", {"approach_id": ap.id, "lane": ap.lane, "booking_id": ap.booking_id,
                                            "subject": ap.subject, "distance": p.get("distance"),
                                            "threshold": p.get("threshold"), "evidence": [event.id],
                                            "detail": detail}, "alarm")
        ap.state, ap.deadline = "held", time.monotonic() + engine.settings.hold_timeout_s
        engine.save(ap)
        engine.record(ap, "hold", "swap_suspected", detail, "alarm")
        log.warning("gate_swap_suspected", lane=ap.lane, approach=ap.id, booking=ap.booking_id)

    def left(self, lane_name: str, passing: dict[str, Any]) -> None:
        """A visitor went out: their entry face is destroyed."""
        if passing.get("role") != "visitor" or passing.get("direction") != "out":
            return
        camera = self.engine.lanes[lane_name].camera
        key = passing.get("booking_id") or passing.get("subject")
        if camera and key:
            self.engine.send(camera, "forget_entry", {"key": key}, f"visitor {key} left", lambda r: None)

    def tick(self, now: datetime | None = None) -> None:
        """Close every visiting session whose end time has passed today (local time)."""
        sessions = self.engine.settings.visiting_sessions
        if not sessions:
            return
        now = now or datetime.now().astimezone()
        for session in sessions:
            key = (now.date().isoformat(), session.name)
            if key in self._ended or now.time() < session.ends:
                continue
            self._ended = {k for k in self._ended if k[0] >= key[0]} | {key}  # today's only
            self._save()
            self.end_session(session.name, now)

    def _save(self) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(sorted(self._ended)))
            os.replace(tmp, self._path)
        except OSError as exc:  # a restart may then close today's session again: a repeated alarm, no loss
            log.error("gate_sessions_not_saved", error=str(exc))

    def end_session(self, name: str, now: datetime) -> None:
        engine = self.engine
        zones = engine.settings.zones
        counted = engine.perimeter.occupancy.count(zones)["people"]
        inside = [p for p in counted if p.get("role") == "visitor" and zones and p["zone"] != zones[0]]
        for camera in {lane.camera for lane in engine.lanes.values() if lane.camera}:
            engine.send(camera, "forget_entry", {"all": True}, f"visiting session {name} ended", lambda r: None)
        payload = {"session": name, "ended_at": now.astimezone(UTC).isoformat(), "still_inside": inside,
                   "detail": f"{len(inside)} visitor(s) entered and have not left" if inside
                   else "every visitor who entered has left"}
        engine.emit("gate.session_unbalanced" if inside else "gate.session_closed", payload,
                    "alarm" if inside else "normal")
