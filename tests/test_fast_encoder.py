"""The numpy face encoder: dlib's descriptors on every shared photo, its cache, and the dlib fallback.

All against the real model file, real photos and dlib itself (the reference), no stand-ins.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from structlog.testing import capture_logs

from drivers.camera import fast_encoder
from drivers.camera.fast_encoder import CacheInvalid, EncoderUnavailable
from drivers.camera.models import DlibEncoder, encoder, models, resnet_file
from drivers.camera.resnet_file import ResNetFileError, read_resnet
from tests.conftest import FACES

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache folder with one fresh conversion (verified against dlib while it was made)."""
    folder = tmp_path_factory.mktemp("encoder-cache")
    enc = fast_encoder.load(resnet_file(), folder)
    (path,) = folder.glob("face-resnet-*.npz")
    return enc, path


@pytest.fixture(scope="module")
def dlib_encoder():
    return DlibEncoder(resnet_file())


def _faces(path):
    """Every face dlib's HOG finds in a photo (upsampled once, as face_recognition does), with landmarks."""
    detector, shaper, _ = models()
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb, [shaper(rgb, r) for r in detector(rgb, 1)]


def test_descriptors_match_dlib_on_every_photo(built, dlib_encoder):
    enc, _ = built
    photos = sorted(FACES.glob("*.jpg"))
    assert len(photos) >= 15
    compared, worst = 0, 0.0
    for photo in photos:
        rgb, shapes = _faces(photo)
        assert shapes, f"{photo.name}: dlib finds no face"
        for shape in shapes:
            ours, ref = enc.encode(rgb, shape), dlib_encoder.encode(rgb, shape)
            assert ours.shape == (128,) and ours.dtype == np.float32
            diff = float(np.abs(ours - ref).max())
            assert diff <= TOLERANCE, f"{photo.name}: max abs difference {diff:.2e}"
            worst, compared = max(worst, diff), compared + 1
    assert compared >= 16  # two_people.jpg has two faces
    assert worst > 0.0  # really two engines (an exact match would mean dlib ran twice)


def test_same_decisions_through_the_pipeline(built):
    from drivers.camera.pipeline import Pipeline, PipelineConfig, read_image

    _, path = built
    fast = Pipeline(PipelineConfig(encoder="numpy", encoder_cache=str(path.parent)))
    slow = Pipeline(PipelineConfig(encoder="dlib"))
    assert (fast.encoder_name, slow.encoder_name) == ("numpy", "dlib")
    names = ["obama_1", "obama_2", "obama-480p", "biden_1", "kit_harington_1", "rose_leslie_2", "two_people"]
    found = {}
    for name in names:
        frame = read_image(FACES / f"{name}.jpg")
        a, b = fast.analyse(frame, use_presence=False), slow.analyse(frame, use_presence=False)
        assert a.status == b.status
        if a.encoding is not None:
            found[name] = (a.encoding, b.encoding)
    assert len(found) == len(names) - 1
    for x, y in [("obama_1", "obama_2"), ("obama_1", "obama-480p"), ("obama_1", "biden_1"),
                 ("kit_harington_1", "rose_leslie_2")]:
        d_fast = float(np.linalg.norm(found[x][0] - found[y][0]))
        d_dlib = float(np.linalg.norm(found[x][1] - found[y][1]))
        assert abs(d_fast - d_dlib) < TOLERANCE
        assert (d_fast <= 0.5) == (d_dlib <= 0.5) == (x.split("_")[0] == y.split("_")[0].split("-")[0])


def test_conversion_is_deterministic_and_cached(built):
    _, path = built
    data = resnet_file().read_bytes()
    first, second = read_resnet(data), read_resnet(data)
    digest = fast_encoder._digest(fast_encoder._arrays(first))
    assert digest == fast_encoder._digest(fast_encoder._arrays(second))
    with np.load(path) as z:
        assert str(z["digest"]) != digest  # the cache's digest also covers the chip and dlib's descriptor
        assert np.array_equal(z["w0"], first.stem.weight)
    net, chip, reference = fast_encoder.load_cache(path, _sha(data))
    assert fast_encoder._digest(fast_encoder._arrays(net)) == digest
    assert chip.shape == (150, 150, 3) and reference.shape == (128,)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _loaded_from_cache(folder) -> bool:
    with capture_logs() as logs:
        fast_encoder.load(resnet_file(), folder)
    return not [e for e in logs if e["event"] == "face_encoder_cache_rebuilt"]


@pytest.mark.parametrize("damage", ["flipped", "truncated", "garbage"])
def test_a_corrupt_cache_is_detected_and_rebuilt(built, tmp_path, damage):
    _, good = built
    path = tmp_path / good.name
    shutil.copyfile(good, path)
    raw = bytearray(path.read_bytes())
    if damage == "flipped":  # inside the weights: the zip's CRC or our digest must notice
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0x5A
    elif damage == "truncated":
        raw = raw[: len(raw) // 3]
    else:
        raw = bytearray(b"not a cache" * 100)
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheInvalid):
        fast_encoder.load_cache(path, _sha(resnet_file().read_bytes()))
    with capture_logs() as logs:
        fast_encoder.load(resnet_file(), tmp_path)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["face_encoder_cache_rebuilt"]
    fast_encoder.load_cache(path, _sha(resnet_file().read_bytes()))  # readable and intact again
    assert _loaded_from_cache(tmp_path)


def test_a_consistent_cache_with_wrong_weights_fails_its_check_and_is_rebuilt(built, tmp_path):
    """Digest fine (re-saved), weights wrong: only running the reference chip can catch it."""
    _, good = built
    sha = _sha(resnet_file().read_bytes())
    net, chip, reference = fast_encoder.load_cache(good, sha)
    net.blocks[5].conv2.weight = net.blocks[5].conv2.weight * np.float32(1.01)
    path = fast_encoder.cache_path(tmp_path, sha)
    fast_encoder.save_cache(path, sha, net, chip, reference)
    with capture_logs() as logs:
        enc = fast_encoder.load(resnet_file(), tmp_path)
    (warning,) = [e for e in logs if e["event"] == "face_encoder_cache_rebuilt"]
    assert "differs from dlib" in warning["reason"]
    assert float(np.abs(enc.descriptor(chip) - reference).max()) <= TOLERANCE
    assert _loaded_from_cache(tmp_path)


def test_a_cache_for_another_model_is_not_used(built, tmp_path):
    _, good = built
    with pytest.raises(CacheInvalid, match="for model"):
        fast_encoder.load_cache(good, "0" * 64)


def test_falls_back_to_dlib_and_says_why(tmp_path, dlib_encoder):
    """A conversion that does not match dlib (tolerance 0: no re-implementation is bit-exact) is not used."""
    with pytest.raises(EncoderUnavailable, match="differs from dlib"):
        fast_encoder.load(resnet_file(), tmp_path, tolerance=0.0)
    assert not list(tmp_path.glob("*.npz"))  # an unverified conversion is not cached
    with capture_logs() as logs:
        enc = encoder("auto", str(tmp_path), tolerance=0.0)
    assert enc.name == "dlib"
    (fallback,) = [e for e in logs if e["event"] == "face_encoder_fallback"]
    assert "differs from dlib" in fallback["reason"]
    rgb, shapes = _faces(FACES / "biden_1.jpg")
    assert np.array_equal(enc.encode(rgb, shapes[0]), dlib_encoder.encode(rgb, shapes[0]))
    with pytest.raises(EncoderUnavailable):
        encoder("numpy", str(tmp_path), tolerance=0.0)  # forced numpy does not fall back


def test_dlib_can_be_forced_and_jitters_use_dlib(tmp_path):
    assert encoder("dlib", str(tmp_path)).name == "dlib"
    assert encoder("auto", str(tmp_path), jitters=3).name == "dlib"
    assert not list(tmp_path.glob("*.npz"))


def test_the_reader_refuses_other_files(tmp_path):
    data = resnet_file().read_bytes()
    for bad in (data[: len(data) // 2], (resnet_file().parent / "shape_predictor_5_face_landmarks.dat").read_bytes(),
                b""):
        with pytest.raises(ResNetFileError):
            read_resnet(bad)
    broken = tmp_path / "resnet.dat"
    broken.write_bytes(data[:-1000])
    with pytest.raises(EncoderUnavailable):
        fast_encoder.load(broken, tmp_path)


def test_the_opt_in_opencv_front_gives_the_numpy_descriptors(built):
    enc, path = built
    front = fast_encoder.load(resnet_file(), path.parent, front=True)
    assert enc.front is None  # opt-in: about 10 MB more resident
    assert front.front is not None and front.front.shape == (64, 17, 17)
    assert encoder("auto", str(path.parent), front=True).front is not None
    for photo in sorted(FACES.glob("*.jpg")):
        rgb, shapes = _faces(photo)
        for shape in shapes:
            diff = float(np.abs(front.encode(rgb, shape) - enc.encode(rgb, shape)).max())
            assert diff <= 2e-6, f"{photo.name}: {diff:.2e}"


def test_a_front_that_computes_otherwise_leaves_numpy_alone(monkeypatch, tmp_path):
    real = fast_encoder.Front.forward
    monkeypatch.setattr(fast_encoder.Front, "forward", lambda self, x: real(self, x) * np.float32(1.001))
    with capture_logs() as logs:
        enc = fast_encoder.load(resnet_file(), tmp_path, front=True)
    assert enc.front is None
    (warning,) = [e for e in logs if e["event"] == "face_encoder_front_mismatch"]
    assert warning["max_abs_diff"] > TOLERANCE
    chip = fast_encoder.reference_chip()
    assert float(np.abs(enc.descriptor(chip) - fast_encoder.dlib_reference(resnet_file(), chip)).max()) <= TOLERANCE


def test_a_bgr_frame_gives_the_rgb_frame_s_descriptor_exactly(built):
    enc, _ = built
    rgb, shapes = _faces(FACES / "two_people.jpg")
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    for shape in shapes:
        assert np.array_equal(enc.encode_bgr(bgr, shape), enc.encode(rgb, shape))
