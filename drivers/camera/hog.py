"""dlib's frontal face detector run as two halves of its image pyramid, on two threads.

HOG detection is the gate's costliest stage, and dlib runs it on one core. It scans an image
pyramid: every level is the one before scaled by 5/6, down to 64 px. The first two levels of a
640-px frame (1 + 0.69 of its pixels) cost as much as all the others (0.48 + 0.33 + ...), so
one thread scans levels 0-1 while the calling thread scans levels 2 and down. Together they
find the same faces as one call, box for box and score for score (proved on every shared
photo at many sizes, tests/test_face_split_detect.py), because each half is dlib's own code on
dlib's own images:

- levels 2 and down are scanned on level 2 made with ``dlib.resize_image`` (what its pyramid
  uses), by the same detector; the first half by a copy limited to two pyramid levels;
- both copies have their non-max suppression switched off, so every candidate comes back and
  dlib's own suppression (its overlap tester's two thresholds, read from the detector) runs
  once over all of them in score order, as in one call;
- a box found in the second half is mapped to the frame as dlib maps it: ``p * 6/5 + 0.3``
  once per level, rounded once at the end. The level is recovered from the box (the only level
  at which it is the image of a whole-pixel box of the detector's window size); a box that
  does not say its level unambiguously, or a level-2 image whose pyramid would not end where
  the frame's does, makes the frame scan whole instead (never seen on the shared photos).

Numbers for a 720p frame scaled to 640 px on this machine: 15.5 ms of CPU in one call, 7.6 +
7.4 ms in the two halves (plus 0.7 ms for the two resizes).
"""

from __future__ import annotations

import math
import os
import queue
import threading
from contextlib import contextmanager

import numpy as np

from drivers.camera.resnet_file import _Reader

SPLIT = 2  # levels scanned by the helper thread: 0 and 1
_UP, _DOWN, _SHIFT = 6 / 5.0, 5.0 / 6, 0.3  # dlib's pyramid_down<6>: point_up = p * 6/5 + 0.3


def _round(x: float) -> int:
    """dlib's double -> pixel rounding (half away from zero)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _up(v: float, levels: int) -> float:
    for _ in range(levels):  # level by level, as dlib does: the same doubles
        v = v * _UP + _SHIFT
    return v


def _encode_int(v: int) -> bytes:
    raw = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(raw) | (0x80 if v < 0 else 0)]) + raw


class SplitDetector:
    """``detect(gray)`` = ``detector(gray, 0)`` of dlib's frontal face detector, in two threads."""

    def __init__(self, detector, dlib):
        self._dlib, self._whole = dlib, detector
        with _scratch_file() as path:
            detector.save(path)
            with open(path, "rb") as f:
                self._file = f.read()
        r = _Reader(self._file)
        # object_detector v2, scan_fhog_pyramid v1, feats (max size, size), cell size, padding,
        # window width, height; then the fields this needs.
        head = [r.int() for _ in range(8)]
        if head[:2] != [2, 1]:
            raise ValueError(f"not a dlib fHOG object detector (versions {head[:2]})")
        at = r.pos
        r.int()  # max pyramid levels (1000: all)
        self._levels_at = (at, r.pos)
        self._min_w, self._min_h = r.int(), r.int()
        r.float()  # nuclear norm regularisation (training only)
        r.int()  # feature dimensions
        at = r.pos
        self._iou, self._covered = r.float(), r.float()  # the overlap tester: box IoU, share covered
        self._overlap_at = (at, r.pos)
        # dlib's detector keeps the image it scans in itself: the helper thread's copy is its own,
        # never one of the calling thread's (levels 2 and down, one copy per pyramid depth).
        self._top = self._limited(SPLIT)
        self._rest: dict[int, object] = {}
        self._windows = self._window_sizes()
        self._helper = _Helper()

    def _limited(self, levels: int):
        """A copy of the detector that scans ``levels`` pyramid levels, its non-max suppression off."""
        lo, hi = self._levels_at
        o_lo, o_hi = self._overlap_at
        never = _encode_int(1) + _encode_int(0)  # 1.0 as dlib writes a double: nothing overlaps that much
        data = self._file[:lo] + _encode_int(levels) + self._file[hi:o_lo] + never + never + self._file[o_hi:]
        with _scratch_file(data) as path:
            return self._dlib.fhog_object_detector(path)

    def _levels_below(self, levels: int):
        if levels not in self._rest:
            self._rest[levels] = self._limited(levels)
        return self._rest[levels]

    def _window_sizes(self) -> set[tuple[int, int]]:
        """The box sizes the detector reports at pyramid level 0 (every window position scores
        above a threshold 100 below its own on a textured image): 73 and 81 px for dlib's."""
        texture = (np.arange(120 * 120, dtype=np.uint32) * 37 % 251).astype(np.uint8).reshape(120, 120)
        rects = self._limited(1).run(texture, 0, -100.0)[0]
        return {(r.width(), r.height()) for r in rects}

    def _levels(self, height: int, width: int) -> int:
        """How many pyramid levels dlib scans on an image this size (its own loop, in Python)."""
        left, top, right, bottom, levels = 0, 0, width - 1, height - 1, 0
        while True:
            left, top = _round((left - _SHIFT) * _DOWN), _round((top - _SHIFT) * _DOWN)
            right, bottom = _round((right - _SHIFT) * _DOWN), _round((bottom - _SHIFT) * _DOWN)
            levels += 1
            if right - left + 1 < self._min_w or bottom - top + 1 < self._min_h:
                return levels

    def detect(self, gray: np.ndarray, adjust_threshold: float = 0.0) -> list:
        """dlib rectangles, best first: what ``detector.run(gray, 0, adjust_threshold)`` finds."""
        h, w = gray.shape[:2]
        levels = self._levels(h, w)
        if levels <= SPLIT or gray.ndim != 2 or gray.dtype != np.uint8:
            return self._whole.run(gray, 0, adjust_threshold)[0]
        top = self._helper.submit(self._top.run, gray, 0, adjust_threshold)
        try:
            small = gray
            for _ in range(SPLIT):  # dlib's pyramid step: floor(5/6 of each side), bilinear
                sh, sw = small.shape
                small = self._dlib.resize_image(small, 5 * sh // 6, 5 * sw // 6)
            rest = None
            if self._levels(*small.shape) >= levels - SPLIT:
                rest = self._candidates(self._levels_below(levels - SPLIT).run(small, 0, adjust_threshold), SPLIT)
        finally:
            found = top.wait()
        if rest is None:
            return self._whole.run(gray, 0, adjust_threshold)[0]
        return self._suppress(self._candidates(found, 0) + rest)

    def _candidates(self, run: tuple, shift: int) -> list | None:
        out = []
        for r, score, _ in zip(*run, strict=True):
            box = (r.left(), r.top(), r.right(), r.bottom())
            if shift:
                box = self._lifted(box, shift)
                if box is None:
                    return None
            out.append((score, box))
        return out

    def _lifted(self, box: tuple[int, int, int, int], shift: int) -> tuple[int, int, int, int] | None:
        """A box found on pyramid level ``shift``, in the frame's coordinates as dlib gives them."""
        found, height = [], box[3] - box[1] + 1
        levels = {max(0, round(math.log((height - 1) / (wh - 1), _UP)) + d) for _, wh in self._windows for d in (-1, 0, 1)}
        for level in sorted(levels):  # only levels where a window could be this tall
            source = [self._preimage(v, level) for v in box]
            if None not in source and (source[2] - source[0] + 1, source[3] - source[1] + 1) in self._windows:
                found.append(tuple(_round(_up(float(v), level + shift)) for v in source))
        return found[0] if len(found) == 1 else None

    @staticmethod
    def _preimage(v: int, level: int) -> int | None:
        """The whole pixel that ``level`` steps up round to ``v`` (one at most: each step spreads by 6/5)."""
        guess = _round((v - _up(0.0, level)) / _UP ** level)
        hits = [x for x in (guess - 1, guess, guess + 1) if _round(_up(float(x), level)) == v]
        return hits[0] if len(hits) == 1 else None

    def _suppress(self, candidates: list) -> list:
        """dlib's non-max suppression: best first, drop a box that overlaps one already kept."""
        candidates.sort(key=lambda c: -c[0])
        kept: list[tuple[int, int, int, int]] = []
        for _, box in candidates:
            if not any(self._overlaps(box, k) for k in kept):
                kept.append(box)
        return [self._dlib.rectangle(*box) for box in kept]

    def _overlaps(self, a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
        inner = _area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
        if inner == 0:
            return False
        outer = _area(min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
        return inner / outer > self._iou or inner / _area(*a) > self._covered or inner / _area(*b) > self._covered


def _area(left: int, top: int, right: int, bottom: int) -> int:
    return max(0, right - left + 1) * max(0, bottom - top + 1)


class _Job:
    def __init__(self, fn, args):
        self.fn, self.args, self.done = fn, args, threading.Event()
        self.result, self.error = None, None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # handed to the caller's wait(), raised there
            self.error = exc
        finally:
            self.done.set()

    def wait(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class _Helper:
    """One long-lived daemon thread running the jobs one caller hands it (a thread pool's
    imports, logging among them, would cost the face worker memory it does not have)."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, fn, *args) -> _Job:
        if self._thread is None or self._pid != os.getpid():  # a forked child has no helper thread
            self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
            self._thread = threading.Thread(target=self._serve, args=(self._jobs,), name="face-hog", daemon=True)
            self._thread.start()
        job = _Job(fn, args)
        self._jobs.put(job)
        return job

    @staticmethod
    def _serve(jobs: queue.SimpleQueue) -> None:
        while True:
            jobs.get().run()


@contextmanager
def _scratch_file(data: bytes = b""):
    """A path dlib can read or write: an anonymous memory file where Linux has them, else a
    temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("edge-hog")
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edge-hog-") as tmp:
        path = os.path.join(tmp, "detector.svm")
        with open(path, "wb") as f:
            f.write(data)
        yield path
