"""One gate lane: frames in, at most one decision per approach out.

An *approach* starts with the first frame that shows a face and ends after
``rearm_frames`` frames without one. Within it the lane asks for more frames
while quality is low or liveness wants more, then decides once: later frames
of the same approach are ignored (debounce). A booking presented for 1:1
verification (``claim``) re-arms the lane so the next good frame decides.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from drivers.camera.decide import Decider, Decision
from drivers.camera.entries import EntryTemplates
from drivers.camera.pipeline import Analysis, Pipeline


@dataclass(frozen=True)
class LaneConfig:
    mode: str = "both"  # verify (1:1 only, needs a claim) | identify (1:N staff) | both
    single_person: bool = True
    rearm_frames: int = 2
    quality_frames: int = 5
    claim_ttl_s: float = 60.0
    audit: bool = False
    audit_retention_days: float = 30.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LaneConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


_FAILED = {"biometric.verify_failed", "biometric.unknown", "biometric.liveness_failed"}


class Lane:
    def __init__(self, pipeline: Pipeline, decider: Decider, liveness, config: LaneConfig | None = None,
                 audit_dir: Path | None = None):
        self.pipeline, self.decider, self.liveness = pipeline, decider, liveness
        self.config = config or LaneConfig()
        self.audit_dir = audit_dir
        self._claim: dict[str, Any] | None = None
        self.active = self.decided = self.quality_reported = False
        self._absent = self._bad = 0
        self.approaches = self.decisions = 0
        self.over_budget: dict[str, int] = {}  # stage -> decisions where it ran over its budget
        self.entries = EntryTemplates()

    def claim(self, subject_id: str, booking_id: str | None, ttl_s: float | None = None,
              entry: str | None = None) -> None:
        """A booking was presented: verify the next face 1:1 against ``subject_id``.

        ``entry``: ``keep`` (a visitor entering: keep the verified face for the exit; a booking
        whose entry face is already kept must show that subject and that face again) or
        ``compare`` (a visitor leaving: compare with the face kept at entry, not the gallery).
        """
        self._claim = {"subject_id": subject_id, "booking_id": booking_id, "entry": entry,
                       "expires": time.monotonic() + (ttl_s or self.config.claim_ttl_s)}
        self.decided = False

    def _pending_claim(self) -> dict[str, Any] | None:
        if self._claim and time.monotonic() > self._claim["expires"]:
            self._claim = None
        return self._claim

    def process(self, frame) -> list[Decision]:
        """Analyse one frame; returns the decisions it caused (usually none)."""
        # Encoding is most of the cost: it runs only for the frame that decides (see _decide).
        a = self.pipeline.analyse(frame, encode=False)
        if a.status in ("unchanged", "empty", "no_face"):
            self._absent += 1
            if self.active and self._absent >= self.config.rearm_frames:
                self.active = False  # the person left: the next face is a new approach
            return []
        self._absent = 0
        if not self.active:
            self.active, self.decided, self.quality_reported, self._bad = True, False, False, 0
            self.liveness.reset()
            self.approaches += 1
        if self.decided:
            return []
        if a.status == "multiple" and self.config.single_person:
            self.decided = True
            return [self._event("biometric.multiple_faces", {"faces": a.faces}, a, "alarm")]
        if a.status == "quality_low":
            self._bad += 1
            if self._bad >= self.config.quality_frames and not self.quality_reported:
                self.quality_reported = True
                quality = {k: v for k, v in a.quality.items() if k != "ok"}
                return [self._event("biometric.quality_low", {"quality": quality}, a, "telemetry")]
            return []
        if a.status != "present":
            return []
        return self._decide(frame, a)

    def _decide(self, frame, a: Analysis) -> list[Decision]:
        claim = self._pending_claim()
        if claim is None and self.config.mode == "verify":
            return []  # waits for a booking to be presented
        verdict = self.liveness.observe(frame, a.face)
        live = {"check": self.liveness.name, "result": verdict,
                "motion": round(getattr(self.liveness, "motion", 0.0), 4)}
        if verdict == "more":
            return []
        self.decided = True
        if verdict == "fail":
            return [self._event("biometric.liveness_failed", {"liveness": live}, a, "alarm")]
        self.pipeline.encode(frame, a)
        started = time.perf_counter()
        if claim is not None:
            self._claim = None
            decision = self._verify(claim, a.encoding)
        else:
            decision = self.decider.identify(a.encoding)
        a.timings_ms["search"] = round((time.perf_counter() - started) * 1000, 2)
        return [self._event(decision.type, {**decision.payload, "liveness": live}, a, decision.priority)]

    def _verify(self, claim: dict[str, Any], encoding) -> Decision:
        key = claim["booking_id"] or claim["subject_id"]
        if claim.get("entry") != "compare":
            decision = self.decider.verify(claim["subject_id"], encoding, booking_id=claim["booking_id"])
            if claim.get("entry") == "keep" and decision.type == "biometric.verified":
                refused = self.entries.keep(key, claim["subject_id"], encoding, self.decider.thresholds.verify)
                if refused is not None:  # the booking already has an entry face: never replaced
                    distance = self.entries.distance(key, encoding)
                    return Decision("biometric.verify_failed", {**decision.payload, "against": "entry",
                                                                "distance": round(distance, 4), "reason": refused},
                                    "alarm")
            return decision
        threshold = self.decider.thresholds.verify
        payload = {"mode": "verify", "subject_id": claim["subject_id"], "booking_id": claim["booking_id"],
                   "threshold": threshold, "against": "entry", **self.decider._common()}
        distance = self.entries.distance(key, encoding)
        payload["distance"] = None if distance is None else round(distance, 4)
        if distance is None:
            return Decision("biometric.verify_failed", {**payload, "reason": "no_entry_template"})
        if distance > threshold:
            return Decision("biometric.verify_failed", {**payload, "reason": "not_the_entry_face"}, "alarm")
        return Decision("biometric.verified", payload)

    def _event(self, type: str, payload: dict[str, Any], a: Analysis, priority: str) -> Decision:
        self.decisions += 1
        over = self.pipeline.config.over_budget(a.timings_ms)
        for stage in over:
            self.over_budget[stage] = self.over_budget.get(stage, 0) + 1
        payload = {**payload, "timings_ms": a.timings_ms,
                   "decision_ms": round(sum(a.timings_ms.values()), 2), "over_budget": over}
        if "quality" not in payload and a.quality:
            payload["quality"] = {k: v for k, v in a.quality.items() if k != "ok"}
        if self.config.audit and type in _FAILED and a.crop is not None:
            payload["audit_ref"] = self._audit(a)
        return Decision(type, payload, priority)

    def _audit(self, a: Analysis) -> str | None:
        """Opt-in: keep an encrypted JPEG of the face of a failed decision."""
        ok, jpeg = cv2.imencode(".jpg", a.crop)
        if not ok or self.audit_dir is None:
            return None
        self.audit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{int(time.time())}-{uuid.uuid4().hex[:12]}.crop"
        sealed = self.decider.gallery.seal_blob(jpeg.tobytes(), name.encode())
        fd = os.open(self.audit_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
        return name

    def purge_audit(self, now: float | None = None) -> int:
        """Delete audit crops older than the retention."""
        if self.audit_dir is None or not self.audit_dir.is_dir():
            return 0
        cutoff = (now or time.time()) - self.config.audit_retention_days * 86400
        gone = 0
        for f in self.audit_dir.glob("*.crop"):
            if f.stat().st_mtime < cutoff:
                f.unlink(missing_ok=True)
                gone += 1
        return gone

    def status(self) -> dict[str, Any]:
        return {"approaches": self.approaches, "decisions": self.decisions, "active": self.active,
                "claim_pending": self._pending_claim() is not None, "over_budget": dict(self.over_budget),
                "entry_templates": len(self.entries)}
