"""Load only the dlib models the pipeline uses.

``import face_recognition`` loads every model it ships (the 68-point predictor
and the CNN detector too, about 149 MB resident). The gate needs the HOG
detector, the 5-point shape predictor and the ResNet encoder, so they are
loaded here directly from the ``face_recognition_models`` files.

The ResNet runs in one of two engines, loaded alone (never both: the gate's
memory budget has room for one copy of the network): ``numpy``
(``drivers.camera.fast_encoder``: the same weights, verified against dlib's
own output when loaded) or ``dlib``. ``auto`` takes numpy and falls back to
dlib, saying why, when the fast one cannot be used.
"""

from __future__ import annotations

import threading
import time
from functools import cache
from pathlib import Path

import numpy as np

from drivers.camera._log import get_logger
from edge.errors import EdgeError

log = get_logger("edge.biometrics.encoder")
ENCODERS = ("auto", "numpy", "dlib")


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
    shape_file = _model_file("shape_predictor_5_face_landmarks.dat")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(shape_file)), dlib


def _model_file(name: str) -> Path:
    folder = _model_dir()
    if not (folder / name).is_file():
        raise ModelsMissing(f"model file {name} is missing from {folder}; reinstall face_recognition_models")
    return folder / name


def encoder_cache_dir(state_dir: str | Path) -> str:
    """Where a device keeps the numpy encoder's converted weights: with its state, because the
    service cannot write a home folder, and so the daemon and the CLI share one conversion."""
    return str(Path(state_dir) / "biometrics" / "cache")


def resnet_file() -> Path:
    return _model_file("dlib_face_recognition_resnet_model_v1.dat")


def models():
    """(HOG detector, 5-point shape predictor, dlib module), loaded once."""
    with _lock:
        return _load()


class DlibEncoder:
    """dlib's own ResNet (``face_recognition_model_v1``)."""

    name = "dlib"

    def __init__(self, model_file: Path):
        import dlib

        self._net = dlib.face_recognition_model_v1(str(model_file))

    def encode(self, rgb: np.ndarray, shape, jitters: int = 1) -> np.ndarray:
        return np.asarray(self._net.compute_face_descriptor(rgb, shape, jitters), dtype=np.float32)


def encoder(kind: str = "auto", cache_dir: str | None = None, jitters: int = 1, *, tolerance: float | None = None,
            front: bool = False):
    """The ResNet encoder (``.name``, ``.encode(rgb, shape, jitters)``), loaded once per setting.

    ``cache_dir`` holds the numpy engine's converted weights (default: the user's cache
    folder). Jittered encodings (``jitters > 1``) are dlib's random crops, so they use dlib.
    ``front``: the numpy engine runs its first blocks in OpenCV's DNN module (opt-in:
    ``drivers.camera.cv_front``).
    """
    if kind not in ENCODERS:
        raise EdgeError(f"unknown face encoder {kind!r}; expected one of {', '.join(ENCODERS)}")
    if kind == "numpy" and jitters > 1:
        raise EdgeError("the numpy face encoder does not jitter; use encoder 'dlib' or 'auto' with jitters > 1")
    models()  # dlib present and the landmark model loaded (the chip is cut from its points)
    with _lock:
        return _encoder(kind, cache_dir, jitters > 1, tolerance, front)


@cache
def _encoder(kind: str, cache_dir: str | None, jittered: bool, tolerance: float | None, front: bool = False):
    from drivers.camera import fast_encoder

    started, model_file = time.perf_counter(), resnet_file()
    chosen, reason = None, None
    if kind != "dlib" and not jittered:
        folder = Path(cache_dir) if cache_dir else fast_encoder.default_cache_dir()
        try:
            chosen = fast_encoder.load(model_file, folder, tolerance=fast_encoder.TOLERANCE
                                       if tolerance is None else tolerance, front=front)
        except fast_encoder.EncoderUnavailable as exc:
            if kind == "numpy":
                raise
            reason = str(exc)
            log.warning("face_encoder_fallback", engine="dlib", reason=reason)
    elif jittered:
        reason = "jittered encodings are dlib's own"
    chosen = chosen or DlibEncoder(model_file)
    log.info("face_encoder_loaded", engine=chosen.name, load_ms=round((time.perf_counter() - started) * 1000),
             **({"reason": reason} if reason else {}))
    return chosen
