"""The face pipeline: one frame in, a measured analysis out.

Stages, cheapest first, each timed (milliseconds in ``timings_ms``):

1. ``presence``: a 96-px grey thumbnail. A flat frame (lens covered, lights
   off) or a scene unchanged since the last frame without a face stops here.
2. ``detect``: dlib's HOG detector on a frame scaled down to ``detect_width``
   pixels, never upsampled (the library default upsamples the full frame:
   about 20x the pixels). HOG finds faces from about 58 px wide at the scale
   it scans (its boxes are never under 72 px there): at 720p from about 116
   px. Its pyramid is scanned in two halves on two threads
   (``drivers.camera.hog``: the same boxes as one call). Opt-in,
   ``quick_detect_width`` scans fewer pixels first and the full frame only
   when that finds nothing (a second face then counts from about 155 px).
3. ``landmarks``: the 5-point shape predictor on the full-resolution frame
   inside each box scaled back up; gives size, pose and the face to use.
4. ``quality``: face size in pixels, sharpness (variance of the Laplacian of
   the face at a fixed scale), pose (yaw, pitch from the landmarks) and a face
   cut off by the frame edge. A bad frame asks for another frame instead of
   deciding.
5. ``encode``: the ResNet 128-d encoding of the chosen face (largest, most
   frontal) from the full-resolution frame. ``encoder`` picks the engine
   (``drivers.camera.models.encoder``): ``auto`` runs dlib's weights in numpy
   (same descriptors, about 6x faster) and falls back to dlib's own.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from drivers.camera.hog import SplitDetector
from drivers.camera.models import encoder, models


@dataclass(frozen=True)
class PipelineConfig:
    detect_width: int = 640
    quick_detect_width: int = 0  # opt-in first pass on fewer pixels (480); 0: always scan at detect_width
    # 2: the HOG pyramid scanned as two halves on two threads (drivers.camera.hog: the same boxes
    # as one call, in about half the time when a second core is free); 1: one call.
    detect_threads: int = 2
    upsample: int = 0
    presence_width: int = 96
    presence_delta: float = 3.0  # mean absolute grey-level change that counts as "something moved"
    flat_std: float = 4.0  # a thumbnail flatter than this holds no face
    min_face_px: int = 80  # face box width at full resolution
    # A still photo decided on (verify, identify, calibrate; not enrollment): it has no closer
    # frame to wait for, and faces down to 40 px still decide right (docs/performance.md).
    min_still_face_px: int = 40
    second_face_px: int = 40  # a second face at least this wide counts as another person
    min_sharpness: float = 30.0
    max_yaw: float = 0.35  # nose offset from the eye midpoint, in eye distances
    max_pitch: float = 1.3  # nose drop below the eyes, in eye distances (frontal ~0.6-0.9)
    min_pitch: float = 0.25
    max_cut_off: float = 0.10  # share of the face box width allowed outside the frame
    jitters: int = 1
    encoder: str = "auto"  # auto | numpy | dlib (see drivers.camera.models.encoder)
    # Opt-in: the numpy engine's first blocks in OpenCV's DNN module (drivers.camera.cv_front):
    # about 2 ms less CPU a face, about 10 MB more resident (the gate's memory goal is tight).
    encoder_front: bool = False
    encoder_cache: str | None = None  # folder for the numpy encoder's converted weights
    allow_multiple: bool = False  # lanes where several people may pass: use the main face
    # Per-stage time budgets (ms) on the gate's hardware; a decision names the stages over
    # budget so a slow camera position or an overloaded box shows up in the events.
    budgets_ms: tuple[tuple[str, float], ...] = (
        ("presence", 5.0), ("detect", 40.0), ("landmarks", 10.0), ("quality", 5.0), ("encode", 120.0),
        ("search", 10.0))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(known.get("budgets_ms"), dict):
            known["budgets_ms"] = tuple({**dict(cls.budgets_ms), **known["budgets_ms"]}.items())
        return cls(**known)

    def over_budget(self, timings_ms: dict[str, float]) -> list[str]:
        budgets = dict(self.budgets_ms)
        return [stage for stage, ms in timings_ms.items() if ms > budgets.get(stage, float("inf"))]


@dataclass
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom at full resolution
    points: np.ndarray  # 5 landmarks (x, y), full resolution
    yaw: float
    pitch: float
    shape: Any = None  # dlib's landmark object, reused by the encoder
    cut_off: float = 0.0  # how far the detected box reaches outside the frame, in box widths

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


@dataclass
class Analysis:
    """What one frame showed. ``status``: unchanged | empty | no_face | multiple | quality_low | present | ok."""

    status: str
    faces: int = 0
    face: Face | None = None
    quality: dict[str, Any] = field(default_factory=dict)
    encoding: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    crop: np.ndarray | None = None  # the face region, only kept for the opt-in audit mode

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "faces": self.faces, "timings_ms": self.timings_ms}
        if self.quality:
            out["quality"] = self.quality
        if self.face is not None:
            out["face_px"] = self.face.width
        return out


class _Clock:
    def __init__(self):
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round((now - self._t) * 1000, 2)
        self._t = now


def _pose(points: np.ndarray) -> tuple[float, float]:
    # 5-point model: 0-1 one eye's corners, 2-3 the other's, 4 under the nose.
    eye_a, eye_b = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    mid, span = (eye_a + eye_b) / 2, float(np.linalg.norm(eye_a - eye_b)) or 1.0
    axis = (eye_b - eye_a) / span
    rel = points[4] - mid
    yaw = float(rel @ axis) / span  # sideways along the eye line
    pitch = float(rel @ np.array([-axis[1], axis[0]])) / span  # down, across the eye line
    return yaw, abs(pitch)


class Pipeline:
    """Stateful per camera: remembers the last empty scene for the presence check."""

    def __init__(self, config: PipelineConfig | None = None, keep_crops: bool = False):
        self.config = config or PipelineConfig()
        self.keep_crops = keep_crops
        self._empty_thumb: np.ndarray | None = None
        self._scaled: dict[int, np.ndarray] = {}  # the frame below at smaller widths
        self._scaled_from: np.ndarray | None = None
        self._detector, self._shaper, self._dlib = models()
        self._split = SplitDetector(self._detector, self._dlib) if _threads(self.config.detect_threads) > 1 else None
        self._encoder = encoder(self.config.encoder, self.config.encoder_cache, self.config.jitters,
                                front=self.config.encoder_front)

    @property
    def encoder_name(self) -> str:
        return self._encoder.name

    def reset(self) -> None:
        self._empty_thumb = None

    def analyse(self, frame: np.ndarray, *, use_presence: bool = True, encode: bool = True,
                thorough: bool = False, enrolling: bool = False) -> Analysis:
        """Run the stages on one BGR frame; stops at the first stage that rules it out.

        ``encode=False`` stops before the encoding (status ``present``): the lane encodes only
        when it is about to decide, not for frames that only feed liveness or show a person
        already decided on.
        ``thorough`` (still photos: enrollment, the CLI, calibration) looks again at twice the
        resolution with upsampling when the fast pass finds nothing: a photo has no next frame.
        A still probe needs only ``min_still_face_px``; ``enrolling`` keeps ``min_face_px`` for a
        template that every later decision is made against.
        """
        cfg, clock = self.config, _Clock()
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        self._scaled_from = None  # a new frame, even in a buffer the camera reuses
        for width in (cfg.detect_width, cfg.quick_detect_width):  # each made from the one before
            if width:
                self._at(gray, width)
        thumb = self._at(gray, cfg.presence_width).astype(np.float32)
        if float(thumb.std()) < cfg.flat_std:
            clock.lap("presence")
            return Analysis("empty", timings_ms=clock.timings)
        if use_presence and self._empty_thumb is not None and self._empty_thumb.shape == thumb.shape:
            if float(np.abs(thumb - self._empty_thumb).mean()) < cfg.presence_delta:
                clock.lap("presence")
                return Analysis("unchanged", timings_ms=clock.timings)
        clock.lap("presence")
        boxes = self._detect_two_pass(gray)
        if not boxes and thorough:
            boxes = self._detect(gray, width=2 * cfg.detect_width, upsample=max(1, cfg.upsample))
        clock.lap("detect")
        if not boxes:
            self._empty_thumb = thumb
            return Analysis("no_face", timings_ms=clock.timings)
        self._empty_thumb = None
        faces = [self._landmarks(gray, box) for box in boxes]
        clock.lap("landmarks")
        others = [f for f in faces if f.width >= cfg.second_face_px]
        if len(others) > 1 and not cfg.allow_multiple:
            return Analysis("multiple", faces=len(others), timings_ms=clock.timings)
        face = max(faces, key=lambda f: f.width * f.width * (1.0 - min(abs(f.yaw), 0.9)))
        quality = self._quality(gray, face, still=thorough, enrolling=enrolling)
        clock.lap("quality")
        crop = _crop(frame, face.box) if self.keep_crops else None
        a = Analysis("quality_low" if not quality["ok"] else "present", faces=len(faces), face=face,
                     quality=quality, timings_ms=clock.timings, crop=crop)
        return self.encode(frame, a) if encode and quality["ok"] else a

    def encode(self, frame: np.ndarray, a: Analysis) -> Analysis:
        """The encoding stage of a ``present`` face, on demand (e.g. once liveness passed)."""
        started = time.perf_counter()
        a.encoding = self._encode(frame, a.face)
        a.timings_ms["encode"] = round((time.perf_counter() - started) * 1000, 2)
        a.status = "ok"
        return a

    def _at(self, gray: np.ndarray, width: int) -> np.ndarray:
        """``gray`` scaled down to ``width``, made from the smallest larger size already made for
        this frame: 1280 -> 640 -> 480 -> 96 costs a fifth of 1280 -> 480 and 1280 -> 96 (an
        integer ratio is INTER_AREA's fast path)."""
        if width >= gray.shape[1]:
            return gray
        if self._scaled_from is not gray:  # another frame: nothing made yet
            self._scaled, self._scaled_from = {}, gray
        if width not in self._scaled:
            larger = [img for size, img in self._scaled.items() if size > width]
            source = min(larger, key=lambda img: img.shape[1], default=gray)
            self._scaled[width] = _resize_to_width(source, width)
        return self._scaled[width]

    def _detect_two_pass(self, gray: np.ndarray) -> list[tuple[tuple[int, int, int, int], float]]:
        """The quick pass on fewer pixels, then the full one only when it finds nothing."""
        quick, full = self.config.quick_detect_width, self.config.detect_width
        width = gray.shape[1]
        if not quick or min(quick, width) >= min(full, width):  # no fewer pixels to scan
            return self._detect(gray)
        found = self._detect(gray, width=quick)
        if not found:
            return self._detect(gray)
        return [self._refine(gray, box, outside) for box, outside in found]

    def _refine(self, gray: np.ndarray, box: tuple[int, int, int, int], outside: float):
        """The quick box looked at again at ``detect_width``, around the face only.

        The landmarks then start from the box the full pass gives (the quick pass's coarser box
        moves the encoding by up to 0.08), for a fraction of its pixels. The region is cut from
        the same scaled frame the full pass scans, on offsets that keep HOG's 8-px cells of the
        first pyramid levels where they are in the full pass.
        """
        h, w = gray.shape[:2]
        scale = min(1.0, self.config.detect_width / w)
        small = self._at(gray, int(round(w * scale)))
        bw = (box[2] - box[0]) * scale * _REFINE_MARGIN
        grid = _REFINE_GRID
        left = max(0, int((box[0] * scale - bw) // grid * grid))
        top = max(0, int((box[1] * scale - bw) // grid * grid))
        right, bottom = int(box[2] * scale + bw) + 1, int(box[3] * scale + bw) + 1
        best, best_overlap = (box, outside), 0.5
        sh, sw = small.shape[:2]
        for r in self._detector(np.ascontiguousarray(small[top:bottom, left:right]), 0):
            rl, rt, rr, rb = left + r.left(), top + r.top(), left + r.right(), top + r.bottom()
            cand = (int(rl / scale), int(rt / scale), int(rr / scale), int(rb / scale))
            overlap = _iou(cand, box)
            if overlap > best_overlap:  # as _detect reports it: clipped, and how far it was cut off
                cut = max(-rl, -rt, rr - sw, rb - sh, 0) / max(1, r.width())
                best = (max(0, cand[0]), max(0, cand[1]), min(w, cand[2]), min(h, cand[3])), cut
                best_overlap = overlap
        return best

    def _detect(self, gray: np.ndarray, width: int | None = None,
                upsample: int | None = None) -> list[tuple[tuple[int, int, int, int], float]]:
        """Face boxes at full resolution (clipped to the frame) and how far each was cut off."""
        h, w = gray.shape[:2]
        scale = min(1.0, (width or self.config.detect_width) / w)
        small = self._at(gray, int(round(w * scale)))
        upsample = self.config.upsample if upsample is None else upsample
        rects = self._split.detect(small) if self._split and not upsample else self._detector(small, upsample)
        sh, sw = small.shape[:2]
        boxes = []
        for r in rects:
            box = (int(r.left() / scale), int(r.top() / scale), int(r.right() / scale), int(r.bottom() / scale))
            outside = max(-r.left(), -r.top(), r.right() - sw, r.bottom() - sh, 0) / max(1, r.width())
            boxes.append(((max(0, box[0]), max(0, box[1]), min(w, box[2]), min(h, box[3])), outside))
        return boxes

    def _landmarks(self, gray: np.ndarray, found: tuple[tuple[int, int, int, int], float]) -> Face:
        box, outside = found
        shape = self._shaper(gray, self._dlib.rectangle(*box))
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        yaw, pitch = _pose(points)
        return Face(box=box, points=points, yaw=yaw, pitch=pitch, shape=shape, cut_off=outside)

    def _quality(self, gray: np.ndarray, face: Face, still: bool = False, enrolling: bool = False) -> dict[str, Any]:
        cfg = self.config
        crop = _crop(gray, face.box)
        # Sharpness at a fixed scale, so a big blurry face does not pass on its size.
        norm = cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA) if crop.size else crop
        sharpness = float(cv2.Laplacian(norm, cv2.CV_64F).var()) if norm.size else 0.0
        problems = []
        if face.width < (cfg.min_face_px if enrolling or not still else min(cfg.min_face_px, cfg.min_still_face_px)):
            problems.append("face_too_small")
        if sharpness < cfg.min_sharpness:
            problems.append("blurred")
        if abs(face.yaw) > cfg.max_yaw or not cfg.min_pitch <= face.pitch <= cfg.max_pitch:
            problems.append("not_frontal")
        if face.cut_off > cfg.max_cut_off and not still:
            # Stepping into view: the next frame will show all of it. A still photo has no next
            # frame, and the encoding of a partly cut face is still usable, so it is decided.
            problems.append("cut_off")
        return {"ok": not problems, "problems": problems, "face_px": face.width,
                "sharpness": round(sharpness, 1), "yaw": round(face.yaw, 3), "pitch": round(face.pitch, 3)}

    def _encode(self, frame: np.ndarray, face: Face) -> np.ndarray:
        if frame.ndim == 3 and hasattr(self._encoder, "encode_bgr"):  # no whole-frame RGB copy
            return self._encoder.encode_bgr(frame, face.shape, self.config.jitters)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        return self._encoder.encode(rgb, face.shape, self.config.jitters)


_REFINE_GRID = 48  # px of the scaled frame: whole HOG cells (8 px) at pyramid levels 0 and 1 (x 5/6)
_REFINE_MARGIN = 0.25  # of the box width on each side: room for the HOG window around the face


def _threads(wanted: int) -> int:
    """``wanted``, but no more than the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(wanted, cpus))


def _resize_to_width(img: np.ndarray, width: int) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= width:
        return img
    return cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _crop(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, right, bottom = box
    return img[max(0, top):max(0, bottom), max(0, left):max(0, right)]


def read_image(path) -> np.ndarray:
    """An upright BGR frame from a photo file, or an ``ImageError`` naming the file and the fix."""
    from drivers.camera.imagefile import load

    return load(path)
