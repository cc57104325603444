"""The quick detection pass (issue 24): the same decisions as scanning the whole frame at
``detect_width``, on every shared photo, and no face lost that the full pass would find."""

from __future__ import annotations

import itertools
from functools import cache

import cv2
import numpy as np
import pytest

from drivers.camera.pipeline import Pipeline, PipelineConfig
from tests._face_helpers import frame
from tests.conftest import FACES

PHOTOS = sorted(p.stem for p in FACES.glob("*.jpg"))
VERIFY = 0.5  # the default 1:1 threshold


@cache
def _pipelines() -> tuple[Pipeline, Pipeline]:
    return Pipeline(PipelineConfig(quick_detect_width=480)), Pipeline(PipelineConfig(quick_detect_width=0))


@cache
def _analysed(name: str, thorough: bool):
    quick, full = _pipelines()
    return (quick.analyse(frame(name), use_presence=False, thorough=thorough),
            full.analyse(frame(name), use_presence=False, thorough=thorough))


@pytest.mark.parametrize("thorough", [False, True], ids=["lane", "still_photo"])
def test_every_photo_gets_the_same_status_and_every_pair_the_same_verdict(thorough):
    encodings = {}
    for name in PHOTOS:
        quick, full = _analysed(name, thorough)
        assert (quick.status, quick.faces) == (full.status, full.faces), name
        if quick.encoding is not None:
            encodings[name] = (quick.encoding, full.encoding)
    assert len(encodings) >= 13
    for (x, (qx, fx)), (y, (qy, fy)) in itertools.combinations(encodings.items(), 2):
        quick_d, full_d = float(np.linalg.norm(qx - qy)), float(np.linalg.norm(fx - fy))
        assert (quick_d <= VERIFY) == (full_d <= VERIFY), f"{x} vs {y}: {quick_d:.3f} / {full_d:.3f}"


@pytest.mark.parametrize("name", ["obama-720p", "obama-480p"])
def test_a_gate_frame_gives_the_full_pass_box_and_the_identical_encoding(name):
    # The refined box comes from the same scaled frame on HOG's cell grid: the landmarks, and so
    # the encoding, are the full pass's to the last bit.
    quick, full = _analysed(name, False)
    assert quick.face.box == full.face.box
    assert np.array_equal(quick.encoding, full.encoding)


def test_a_face_too_small_for_the_quick_pass_is_still_found_by_the_full_one():
    # obama-720p shrunk to a face ~130 px wide on a 720p canvas: ~49 px at the quick scale (HOG
    # needs ~58), ~65 px at the full one.
    small = cv2.resize(frame("obama-720p"), None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.full((720, 1280, 3), 110, np.uint8)
    canvas[60:60 + small.shape[0], 100:100 + small.shape[1]] = small
    quick, full = _pipelines()
    gray = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)
    assert quick._detect(gray, width=quick.config.quick_detect_width) == []
    a, b = quick.analyse(canvas, use_presence=False), full.analyse(canvas, use_presence=False)
    assert a.status == b.status == "ok"
    assert a.face.box == b.face.box and np.array_equal(a.encoding, b.encoding)


def test_quick_pass_off_or_on_a_small_frame_scans_once():
    quick, full = _pipelines()
    calls = []
    for p in (quick, full):
        real = p._detect
        p._detect = lambda gray, width=None, upsample=None, real=real: calls.append(width) or real(gray, width, upsample)
        try:
            p.analyse(cv2.resize(frame("obama-480p"), (400, 225)), use_presence=False)
        finally:
            del p._detect
    assert calls == [None, None]  # 400 px wide: nothing smaller to scan first; off: the full pass only


def test_a_face_cut_off_at_the_edge_is_judged_the_same_by_both():
    shifted = np.full_like(frame("obama-720p"), 110)
    shifted[:, :1280 - 600] = frame("obama-720p")[:, 600:]  # a sixth of the face past the left edge
    quick, full = _pipelines()
    a, b = quick.analyse(shifted, use_presence=False), full.analyse(shifted, use_presence=False)
    assert a.status == b.status == "quality_low"
    assert a.quality["problems"] == b.quality["problems"] and "cut_off" in a.quality["problems"]
    assert (a.face.box, a.face.cut_off) == (b.face.box, b.face.cut_off)
