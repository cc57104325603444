"""Load only the three dlib models the pipeline uses.

``import face_recognition`` loads every model it ships (the 68-point predictor
and the CNN detector too, about 149 MB resident). The gate needs the HOG
detector, the 5-point shape predictor and the ResNet encoder, so they are
loaded here directly from the ``face_recognition_models`` files.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path

from edge.errors import EdgeError


class ModelsMissing(EdgeError):
    """dlib or the face model files are not installed."""


_lock = threading.Lock()


def _model_dir() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec("face_recognition_models")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelsMissing("face_recognition_models is not installed; run scripts/setup.sh --gate")
    # Found without importing the package: its __init__ pulls in pkg_resources (slow, heavy).
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@cache
def _load():
    try:
        import dlib
    except ImportError:
        raise ModelsMissing("dlib is not installed; run scripts/setup.sh --gate (installs dlib-bin)") from None
    folder = _model_dir()
    shape_file = folder / "shape_predictor_5_face_landmarks.dat"
    encoder_file = folder / "dlib_face_recognition_resnet_model_v1.dat"
    for f in (shape_file, encoder_file):
        if not f.is_file():
            raise ModelsMissing(f"model file {f.name} is missing from {folder}; reinstall face_recognition_models")
    return (dlib.get_frontal_face_detector(), dlib.shape_predictor(str(shape_file)),
            dlib.face_recognition_model_v1(str(encoder_file)), dlib)


def models():
    """(HOG detector, 5-point shape predictor, ResNet encoder, dlib module), loaded once."""
    with _lock:
        return _load()
