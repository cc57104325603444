"""The HOG pyramid in two halves on two threads (issue 24): the same boxes as one dlib call,
the same decisions, and the two-faces alarm as sensitive as before, on real photos."""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import pytest

from drivers.camera.hog import SplitDetector
from drivers.camera.models import models
from drivers.camera.pipeline import Pipeline, PipelineConfig
from tests._face_helpers import frame
from tests.conftest import FACES

PHOTOS = sorted(p.stem for p in FACES.glob("*.jpg"))


@cache
def _split() -> SplitDetector:
    detector, _, dlib = models()
    return SplitDetector(detector, dlib)


@cache
def _pipelines() -> tuple[Pipeline, Pipeline]:
    return Pipeline(PipelineConfig()), Pipeline(PipelineConfig(detect_threads=1))


def _boxes(rects) -> list[tuple[int, int, int, int]]:
    return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]


def _gray(name: str, width: int) -> np.ndarray:
    gray = cv2.cvtColor(frame(name), cv2.COLOR_BGR2GRAY)
    h, w = gray.shape
    return cv2.resize(gray, (width, round(h * width / w)), interpolation=cv2.INTER_AREA) if w > width else gray


@pytest.mark.parametrize("adjust", [0.0, -1.0], ids=["as_the_gate_runs", "many_candidates"])
def test_the_two_halves_find_what_one_call_finds_on_every_photo_at_many_sizes(adjust):
    # -1.0 lowers the threshold until dozens of overlapping candidates per frame reach the
    # suppression: the merge must keep exactly the boxes dlib keeps, in its order.
    detector, _, _ = models()
    split, frames, found = _split(), 0, 0
    for name in PHOTOS:
        for width in (240, 400, 560, 640, 800, 1000):
            gray = _gray(name, width)
            whole = _boxes(detector.run(gray, 0, adjust)[0])
            assert _boxes(split.detect(gray, adjust)) == whole, f"{name} at {width} px"
            frames, found = frames + 1, found + len(whole)
            if gray.shape[1] < width:
                break
    assert frames >= 70 and found >= 60  # most frames hold a face: the comparison is not of empty lists


def test_a_box_that_does_not_say_its_level_makes_the_frame_scan_whole(monkeypatch):
    detector, _, dlib = models()
    split = SplitDetector(detector, dlib)
    whole_calls = []
    real_run = detector.run

    class Whole:
        def run(self, *args):
            whole_calls.append(args[1:])
            return real_run(*args)

    split._whole = Whole()
    gray = _gray("obama-720p", 640)
    assert _boxes(split.detect(gray)) == _boxes(detector(gray, 0)) and whole_calls == []
    split._windows = set()  # no box can be traced back to a window: every lift fails
    assert _boxes(split.detect(gray)) == _boxes(detector(gray, 0)) and whole_calls == [(0, 0.0)]


@pytest.mark.parametrize("thorough", [False, True], ids=["lane", "still_photo"])
def test_two_threads_decide_every_photo_exactly_as_one(thorough):
    two, one = _pipelines()
    assert two._split is not None and one._split is None
    for name in PHOTOS:
        a, b = two.analyse(frame(name), use_presence=False, thorough=thorough), \
            one.analyse(frame(name), use_presence=False, thorough=thorough)
        assert (a.status, a.faces) == (b.status, b.faces), name
        assert (a.face is None and b.face is None) or a.face.box == b.face.box, name
        assert (a.encoding is None and b.encoding is None) or np.array_equal(a.encoding, b.encoding), name


def _face_crop(name: str) -> np.ndarray:
    """A real face with half its width of surroundings on each side."""
    a = _pipelines()[1].analyse(frame(name), use_presence=False)
    left, top, right, bottom = a.face.box
    m = (right - left) // 2
    return frame(name)[max(0, top - m):bottom + m, max(0, left - m):right + m], right - left


def _beside(main: np.ndarray, name: str, box_px: int, at=(40, 60)) -> np.ndarray:
    """``main`` with a second real face pasted in, scaled to a detector box of about ``box_px``."""
    crop, width = _face_crop(name)
    small = cv2.resize(crop, None, fx=box_px / width, fy=box_px / width, interpolation=cv2.INTER_AREA)
    out = main.copy()
    x, y = at
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def _level_group(box) -> str:
    """Which half finds a box on the 640-px frame: pyramid levels 0-1 report boxes 73-98 px wide
    there (146-196 px at 720p), levels 2 and down 104 px and wider."""
    return "levels 0-1" if box[2] - box[0] + 1 < 100 else "levels 2+"


@pytest.mark.parametrize("second", ["rose_leslie_1", "biden_1", "kit_harington_1"])
@pytest.mark.parametrize("box_px", [120, 140])
def test_a_second_small_real_face_beside_the_gate_frame_raises_the_alarm(second, box_px):
    # The smallest second faces the one-call scan finds at 720p (about 116 px and up): the
    # default alarm is as sensitive as before. (The opt-in quick pass misses these.)
    canvas = _beside(frame("obama-720p"), second, box_px)
    two, one = _pipelines()
    a, b = two.analyse(canvas, use_presence=False), one.analyse(canvas, use_presence=False)
    assert (a.status, a.faces, a.encoding) == ("multiple", 2, None)
    assert (b.status, b.faces) == (a.status, a.faces)
    boxes = _boxes(two._split.detect(two._at(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY), 640)))
    assert [_level_group(b) for b in boxes] == ["levels 0-1", "levels 0-1"]


@pytest.mark.parametrize("second", ["rose_leslie_1", "biden_1"])
def test_faces_found_by_different_halves_still_count_as_two(second):
    # A face close to the camera (found on levels 2 and down, by the calling thread) and a small
    # one behind it (levels 0-1, by the helper thread): both are counted.
    close = cv2.resize(frame("obama-720p"), None, fx=1.5, fy=1.5, interpolation=cv2.INTER_AREA)
    close = np.ascontiguousarray(close[:720, 420:1700])
    canvas = _beside(close, second, 130, at=(20, 420))
    two, one = _pipelines()
    a = two.analyse(canvas, use_presence=False)
    assert (a.status, a.faces) == ("multiple", 2)
    assert one.analyse(canvas, use_presence=False).status == "multiple"
    boxes = _boxes(two._split.detect(two._at(cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY), 640)))
    assert sorted(_level_group(b) for b in boxes) == ["levels 0-1", "levels 2+"]
