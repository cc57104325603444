"""Still photos decided down to ``min_still_face_px`` (issue 24): a photo has no closer frame to
wait for. Enrollment and lane frames keep ``min_face_px``; no impostor passes on a small face."""

from __future__ import annotations

import cv2
import numpy as np

from tests._face_helpers import analysis, encoding, frame, photo, pipeline


def _small(name: str, face_px: int) -> np.ndarray:
    """The photo scaled so its face is ``face_px`` wide, on a grey 640x480 canvas."""
    scale = face_px / analysis(name).face.width
    img = cv2.resize(frame(name), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((480, 640, 3), 120, np.uint8)
    h, w = min(480, img.shape[0]), min(640, img.shape[1])
    canvas[:h, :w] = img[:h, :w]
    return canvas


def test_a_small_face_in_a_still_photo_is_decided_and_right():
    probe = pipeline().analyse(_small("obama_2", 60), use_presence=False, thorough=True)
    assert probe.status == "ok" and 40 <= probe.face.width < 80
    assert float(np.linalg.norm(probe.encoding - encoding("obama_1"))) <= 0.5
    for impostor in ("biden_1", "kit_harington_1", "rose_leslie_1", "alex_lacamoire_1"):
        assert float(np.linalg.norm(probe.encoding - encoding(impostor))) > 0.5, impostor


def test_enrollment_and_lane_frames_still_need_min_face_px():
    small = _small("obama_2", 60)
    enrolled = pipeline().analyse(small, use_presence=False, thorough=True, enrolling=True)
    assert enrolled.status == "quality_low" and "face_too_small" in enrolled.quality["problems"]
    lane = pipeline().analyse(small, use_presence=False)
    assert lane.status in ("quality_low", "no_face") and lane.encoding is None


def test_below_min_still_face_px_a_photo_is_still_refused():
    a = pipeline().analyse(_small("obama_2", 34), use_presence=False, thorough=True)
    assert a.status in ("quality_low", "no_face") and a.encoding is None


def test_cli_verifies_a_small_face_but_will_not_enroll_it(biometrics_cli, tmp_path):
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), _small("obama_2", 60))
    visitor = ("--role", "visitor", "--valid-until", "2099-01-01T00:00Z")
    r = biometrics_cli("enroll", "--subject", "obama", *visitor, "--reason", "test", small)
    assert r.exit_code != 0 and "face_too_small" in r.output
    assert biometrics_cli("enroll", "--subject", "obama", *visitor, "--reason", "test", photo("obama_1")).exit_code == 0
    r = biometrics_cli("verify", "--subject", "obama", small)
    assert r.exit_code == 0, r.output
