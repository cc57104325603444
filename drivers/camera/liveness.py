"""Presentation-attack checks: a pluggable seam and a basic built-in one.

The built-in ``motion`` check is basic and says so: a live face moves. Over
an approach it compares the face's five landmarks after removing position,
scale and in-plane rotation (a similarity alignment on the eyes); a printed
photo or a phone held still, or slid and turned in its own plane, keeps the
same aligned geometry and fails. It does NOT stop a video replay, a photo
bent or tilted on purpose, or a mask. A site that needs more plugs in a
certified check: ``liveness = "package.module:ClassName"``, a class with
``reset()`` and ``observe(frame, face) -> "pass" | "fail" | "more"``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from edge.errors import EdgeError


class LivenessCheck(Protocol):
    name: str

    def reset(self) -> None: ...
    def observe(self, frame: np.ndarray, face: Any) -> str: ...


class NoLiveness:
    """Explicitly off (image-at-a-time CLI, lanes with a guard): every face passes, recorded as 'none'."""

    name = "none"

    def reset(self) -> None:
        pass

    def observe(self, frame, face) -> str:
        return "pass"


def aligned(points: np.ndarray) -> np.ndarray:
    """Landmarks with translation, scale and in-plane rotation removed (eyes on a fixed line)."""
    eye_a, eye_b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    mid, vec = (eye_a + eye_b) / 2, eye_b - eye_a
    span = float(np.linalg.norm(vec)) or 1.0
    c, s = vec / span
    rot = np.array([[c, s], [-s, c]], dtype=np.float32)
    return ((points - mid) @ rot.T) / span


class MotionLiveness:
    """Basic: pass once the aligned landmarks moved by ``min_motion`` eye-distances."""

    name = "motion"

    def __init__(self, min_motion: float = 0.05, max_frames: int = 8):
        self.min_motion, self.max_frames = min_motion, max_frames
        self.reset()

    def reset(self) -> None:
        self._first: np.ndarray | None = None
        self._frames = 0
        self.motion = 0.0

    def observe(self, frame, face) -> str:
        shape = aligned(np.asarray(face.points, dtype=np.float32))
        self._frames += 1
        if self._first is None:
            self._first = shape
            return "more"
        # The largest landmark shift: turning the head moves the nose against the eyes.
        self.motion = max(self.motion, float(np.linalg.norm(shape - self._first, axis=1).max()))
        if self.motion >= self.min_motion:
            return "pass"
        return "fail" if self._frames >= self.max_frames else "more"


def make_liveness(spec: str, options: dict[str, Any] | None = None) -> LivenessCheck:
    """'motion' | 'none' | 'module:Class' (a third-party, e.g. certified, check)."""
    options = options or {}
    if spec == "motion":
        return MotionLiveness(**options)
    if spec == "none":
        return NoLiveness()
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise EdgeError(f"liveness {spec!r}: expected 'motion', 'none' or 'package.module:ClassName'")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise EdgeError(f"liveness {spec!r} cannot be loaded: {exc}") from None
    return cls(**options)
