"""From an encoding to a decision: 1:1 verification and 1:N identification.

False accepts grow with the gallery (1-(1-p)^N), so visitors are only ever
verified 1:1 against the booking they present, and only staff are
identified 1:N, with a threshold that tightens as the staff gallery grows:

    identify_threshold(N) = identify                                  if N <= identify_base_size
                          = max(identify_floor,
                                identify - identify_step * log10(N / identify_base_size))

Each tenfold growth of the gallery multiplies the chance that some impostor
falls under the threshold by about ten (1-(1-p)^N ~ N*p), so the per-pair
false-accept rate p must fall tenfold to keep the gallery's rate constant;
``identify_step`` (0.03 per decade) is the distance a site gives up for that.
It is a conservative default, not a measured law: a site checks it with
``edge biometrics calibrate`` on its own impostor pairs. An identification
also needs a margin to the runner-up subject (``min_margin``) so that two
similar staff members are never confused: such a case is ``unknown``
(ambiguous).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.camera.gallery import Gallery, Subject
from drivers.camera.search import Index


@dataclass(frozen=True)
class Thresholds:
    verify: float = 0.5
    identify: float = 0.45
    identify_floor: float = 0.35
    identify_step: float = 0.03
    identify_base_size: int = 100
    min_margin: float = 0.08

    def identify_at(self, gallery_size: int) -> float:
        if gallery_size <= self.identify_base_size:
            return self.identify
        cut = self.identify_step * math.log10(gallery_size / self.identify_base_size)
        return round(max(self.identify_floor, self.identify - cut), 4)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class Decision:
    type: str  # biometric.verified | verify_failed | identified | unknown
    payload: dict[str, Any] = field(default_factory=dict)
    priority: str = "normal"

    @property
    def accepted(self) -> bool:
        return self.type in ("biometric.verified", "biometric.identified")


class DeviceClock:
    """The daemon's trusted time in the face worker, a process of its own: what the driver's
    ``ctx.now()`` said at its last message, advanced by this machine's monotonic time since.

    A visitor's ``valid_until`` must be judged by it, not by the wall clock alone: the daemon's
    time is never before its time floor (edge.commands.seen), so a clock set back does not
    make an ended visit valid again. Until told, and wherever the wall clock is later, the
    wall clock."""

    def __init__(self, wall=time.time, mono=time.monotonic):
        self._wall, self._mono = wall, mono
        self._told: tuple[float, float] | None = None  # (trusted time, monotonic time then)

    def tell(self, trusted: object) -> None:
        """The daemon's trusted time now (None or not a number: nothing learnt)."""
        if isinstance(trusted, int | float) and not isinstance(trusted, bool) and math.isfinite(trusted):
            self._told = (float(trusted), self._mono())

    def __call__(self) -> float:
        wall = self._wall()
        if self._told is None:
            return wall
        told, at = self._told
        return max(wall, told + (self._mono() - at))


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


class Decider:
    """Holds the searchable gallery, reloading it whenever the database changed."""

    def __init__(self, gallery: Gallery, thresholds: Thresholds | None = None, purge_grace_s: float = 3600.0,
                 clock=time.time):
        self.gallery = gallery
        self._clock = clock  # judges validity windows: the worker gives a DeviceClock
        self.thresholds = thresholds or Thresholds()
        self.purge_grace_s = purge_grace_s
        self._token: tuple[int, int] | None = None
        self._next_boundary = 0.0
        self.by_id: dict[str, Subject] = {}
        self.everyone = Index([])
        self.staff = Index([])
        self.sync: dict[str, Any] = {}

    def refresh(self, now: float | None = None) -> None:
        """Reload if anything committed (a revoke included) or a validity window opened/closed."""
        now = self._clock() if now is None else now
        token = self.gallery.change_token()
        if token == self._token and now < self._next_boundary:
            return
        if self.gallery.purge_expired(now, self.purge_grace_s):
            token = self.gallery.change_token()
        subjects = self.gallery.subjects()
        self.by_id = {s.subject_id: s for s in subjects}
        self.everyone = Index(subjects)
        self.staff = Index([s for s in subjects if s.role == "staff" and s.valid_at(now)])
        bounds = [b for s in subjects for b in (s.valid_from, s.valid_until) if b is not None and b > now]
        self._next_boundary = min(bounds, default=now + 300.0)  # also purges at least every 5 minutes
        self.sync = self.gallery.sync_state()
        self._token = token

    def _common(self) -> dict[str, Any]:
        return {"gallery_epoch": self.sync.get("epoch", 0), "gallery_version": self.sync.get("version", 0)}

    def verify(self, subject_id: str, encoding, *, booking_id: str | None = None,
               now: float | None = None) -> Decision:
        now = self._clock() if now is None else now
        self.refresh(now)
        threshold = self.thresholds.verify
        payload = {"mode": "verify", "subject_id": subject_id, "booking_id": booking_id,
                   "threshold": threshold, **self._common()}
        subject = self.by_id.get(subject_id)
        if subject is None:
            return Decision("biometric.verify_failed", {**payload, "reason": "not_enrolled", "distance": None})
        distance = self.everyone.distance_to(subject_id, encoding)
        payload["distance"] = _r(distance)
        if not subject.valid_at(now):
            early = subject.valid_from is not None and now < subject.valid_from
            return Decision("biometric.verify_failed",
                            {**payload, "reason": "not_yet_valid" if early else "expired"})
        if distance is None or distance > threshold:
            return Decision("biometric.verify_failed", {**payload, "reason": "no_match"})
        return Decision("biometric.verified", payload)

    def identify(self, encoding, *, now: float | None = None) -> Decision:
        now = self._clock() if now is None else now
        self.refresh(now)
        n = len(self.staff)
        threshold = self.thresholds.identify_at(n)
        payload: dict[str, Any] = {"mode": "identify", "threshold": threshold, "gallery_size": n,
                                   **self._common()}
        if n == 0:
            return Decision("biometric.unknown", {**payload, "reason": "empty_gallery", "distance": None})
        match = self.staff.nearest(encoding)
        payload.update(distance=_r(match.distance), margin=_r(match.margin),
                       runner_up_distance=_r(match.runner_up_distance))
        if match.distance > threshold:
            return Decision("biometric.unknown", {**payload, "reason": "no_match"})
        if match.margin is not None and match.margin < self.thresholds.min_margin:
            return Decision("biometric.unknown", {**payload, "reason": "ambiguous"})
        return Decision("biometric.identified", {**payload, "subject_id": match.subject_id})
