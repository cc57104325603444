"""Photos as they arrive from phones and the web, made from the shared photos into tmp_path.

Sideways JPEGs with an EXIF orientation tag, greyscale, transparent, 16-bit,
CMYK and other formats, a 48-megapixel frame, a tiny face in a big frame, a
face at the edge; then files that are not usable photos at all, in the
pipeline and through the CLI, where each bad file gets one error line and
the good ones are still decided.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from PIL import Image  # installed with the gate's imaging stack (scripts/setup.sh --gate)

from drivers.camera.gallery import Gallery, Subject
from drivers.camera.imagefile import ImageError
from drivers.camera.pipeline import read_image
from edge.testing.daemon import dump_toml
from tests._face_helpers import analysis, encoding, frame, photo, pipeline, template
from tests.conftest import REPO

ORIENTATION = 0x0112
VISITOR = ("--role", "visitor", "--valid-until", "2099-01-01T00:00Z")  # one operator enrolls a visitor
# EXIF orientation -> how the stored pixels were turned from the upright picture (Pillow's
# ROTATE_90 is anticlockwise): a viewer undoes it.
STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def _distance(a, name="obama_1") -> float:
    assert a.status == "ok", (a.status, a.quality)
    return float(np.linalg.norm(a.encoding - encoding(name)))


def _still(img):
    return pipeline().analyse(img, use_presence=False, thorough=True)


def _on_noise(face: np.ndarray, width: int, height: int) -> np.ndarray:
    """The face in the middle of a textured scene (a flat wall would be 'empty' at the presence stage)."""
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    canvas = cv2.resize(cv2.GaussianBlur(scene, (0, 0), 2), (width, height))
    h, w = face.shape[:2]
    y, x = (height - h) // 2, (width - w) // 2
    canvas[y:y + h, x:x + w] = face
    return canvas


# -- how a phone stores a photo --------------------------------------------------------------------

@pytest.mark.parametrize("orientation", sorted(STORED))
def test_a_phone_photo_stored_turned_with_an_exif_orientation_is_read_upright(tmp_path, orientation):
    upright = Image.open(photo("obama_1"))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / f"IMG_{orientation}.jpg"
    upright.transpose(STORED[orientation]).save(path, quality=95, exif=exif.tobytes())
    assert Image.open(path).getexif()[ORIENTATION] == orientation
    sideways = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if orientation != 3:
        assert sideways.shape[:2] == frame("obama_1").shape[1::-1]
        assert _still(sideways).status == "no_face"  # what the gate would see without the tag

    img = read_image(path)
    assert img.shape == frame("obama_1").shape
    assert np.abs(img.astype(int) - frame("obama_1")).mean() < 4  # the same picture, not mirrored
    assert _distance(_still(img)) < 0.2


def test_the_orientation_tag_is_honoured_in_png_and_webp_too(tmp_path):
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    for suffix in ("png", "webp"):
        path = tmp_path / f"turned.{suffix}"
        Image.open(photo("obama_1")).transpose(STORED[6]).save(path, exif=exif.tobytes(), quality=95)
        img = read_image(path)
        assert img.shape == frame("obama_1").shape, suffix
        assert _distance(_still(img)) < 0.2, suffix


def _grey_jpeg(path):
    cv2.imwrite(str(path), cv2.cvtColor(frame("obama_1"), cv2.COLOR_BGR2GRAY))


def _alpha_png(path):
    # A cut-out: the face on a transparent background, as web images often are.
    bgra = cv2.cvtColor(frame("obama_1"), cv2.COLOR_BGR2BGRA)
    left, t, r, b = analysis("obama_1").face.box
    mask = np.zeros(bgra.shape[:2], np.uint8)
    cv2.ellipse(mask, ((left + r) // 2, (t + b) // 2), (r - left, b - t), 0, 0, 360, 255, -1)
    bgra[..., 3] = mask
    bgra[mask == 0, :3] = 0
    cv2.imwrite(str(path), bgra)


def _cmyk_jpeg(path):
    Image.open(photo("obama_1")).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"


def _pillow(fmt):
    def save(path):
        Image.open(photo("obama_1")).save(path, format=fmt, **({"quality": 95} if fmt == "WEBP" else {}))
    return save


FORMATS = {"grey.jpg": _grey_jpeg, "cutout.png": _alpha_png, "print.jpg": _cmyk_jpeg,
           "photo.webp": _pillow("WEBP"), "photo.bmp": _pillow("BMP"), "photo.tiff": _pillow("TIFF"),
           "photo.gif": _pillow("GIF")}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_greyscale_transparent_cmyk_and_other_formats_are_verified_as_the_same_person(tmp_path, name):
    path = tmp_path / name
    FORMATS[name](path)
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == frame("obama_1").shape
    assert _distance(_still(img)) < 0.3  # the default verify threshold is 0.5


def test_a_16_bit_png_is_read_as_the_same_8_bit_picture(tmp_path):
    path = tmp_path / "scan16.png"
    cv2.imwrite(str(path), frame("obama_1").astype(np.uint16) * 257)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    img = read_image(path)
    assert img.dtype == np.uint8 and np.array_equal(img, frame("obama_1"))


def test_a_jpeg_with_data_after_its_end_marker_is_read(tmp_path):
    # Some phones append a video clip or a depth map after the picture ("motion photos").
    path = tmp_path / "motion.jpg"
    path.write_bytes(photo("obama_1").read_bytes() + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 40)
    assert np.array_equal(read_image(path), frame("obama_1"))


# -- size --------------------------------------------------------------------------------------------

def test_a_4000x3000_photo_is_decided_quickly(tmp_path):
    face = cv2.resize(frame("obama_1"), None, fx=2.6, fy=2.6, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), _on_noise(face, 4000, 3000), [cv2.IMWRITE_JPEG_QUALITY, 90])
    started = time.monotonic()
    a = _still(read_image(path))
    elapsed = time.monotonic() - started
    assert a.face.width > 500 and _distance(a) < 0.3
    assert a.timings_ms["detect"] < 1000  # detection runs on a 640-px copy, not on 12 MP
    assert elapsed < 5.0


_PEAK = """
import resource, sys, numpy as np
from drivers.camera.pipeline import Pipeline, read_image
p = Pipeline()
p.analyse(read_image(sys.argv[1]), use_presence=False, thorough=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
frame = read_image(sys.argv[2])
a = p.analyse(frame, use_presence=False, thorough=True)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(frame.shape[1], frame.shape[0], a.status, (after - before) / 1024)
"""


def test_a_48_megapixel_photo_is_decoded_at_half_scale_without_filling_memory(tmp_path):
    face = cv2.resize(frame("obama_1"), None, fx=4.0, fy=4.0, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "huge.jpg"
    cv2.imwrite(str(path), _on_noise(face, 8000, 6000), [cv2.IMWRITE_JPEG_QUALITY, 85])
    del face
    r = subprocess.run([sys.executable, "-c", _PEAK, str(photo("obama-720p")), str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO),
                                                                          "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    width, height, status, growth_mb = r.stdout.split()[-4:]
    assert (int(width), int(height), status) == (4000, 3000, "ok")
    # Decoded at full size the frame alone would be 8000 * 6000 * 3 bytes = 137 MB.
    assert float(growth_mb) < 8000 * 6000 * 3 / 2**20, growth_mb


def test_a_tiny_face_in_a_large_frame_is_a_clear_no_face_not_a_crash(tmp_path):
    face = cv2.resize(frame("obama-720p"), None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)
    path = tmp_path / "far_away.jpg"
    cv2.imwrite(str(path), _on_noise(face, 4000, 3000))
    a = _still(read_image(path))
    assert a.status in ("no_face", "quality_low") and a.encoding is None
    if a.status == "quality_low":
        assert "face_too_small" in a.quality["problems"]


def test_a_face_at_the_edge_of_a_still_photo_is_decided(tmp_path):
    left, _, r, _ = analysis("obama_1").face.box
    path = tmp_path / "edge.png"
    cv2.imwrite(str(path), frame("obama_1")[:, left + (r - left) // 6:])  # a sixth of the face cut off
    assert _distance(_still(read_image(path))) < 0.35


# -- files that are not usable photos ------------------------------------------------------------------

def _exif_app1_with_thumbnail_end() -> bytes:
    # An APP1 segment holding an EOI marker, as an EXIF thumbnail does: it must not count as the end.
    body = b"Exif\0\0" + b"\xff\xd8\xff\xdb" + bytes(60) + b"\xff\xd9"
    return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body


BAD = {
    "missing.jpg": (None, "not_found"),
    "folder.jpg": (lambda p: p.mkdir(), "is_directory"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty"),
    "half.jpg": (lambda p: p.write_bytes(photo("obama_1").read_bytes()[:40_000]), "truncated"),
    "last_bytes_lost.jpg": (lambda p: p.write_bytes(photo("obama_1").read_bytes()[:-200]), "truncated"),
    "thumb_then_cut.jpg": (lambda p: p.write_bytes(
        b"\xff\xd8" + _exif_app1_with_thumbnail_end() + photo("obama_1").read_bytes()[2:-5000]), "truncated"),
    "half.png": (lambda p: p.write_bytes(cv2.imencode(".png", frame("biden_1"))[1].tobytes()[:50_000]),
                 "truncated"),
    "notes.jpg": (lambda p: p.write_text("visitor photo to follow\n"), "not_an_image"),
    "iphone.jpg": (lambda p: p.write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(4000)),
                   "unsupported_format"),
    "IMG_0001.HEIC": (lambda p: p.write_bytes(b"\0\0\0\x1cftypmif1\0\0\0\0mif1heicmiaf" + bytes(4000)),
                      "unsupported_format"),
    "clip.jpg": (lambda p: p.write_bytes(b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41" + bytes(4000)),
                 "not_an_image"),
    "scan.pdf": (lambda p: p.write_bytes(b"%PDF-1.7\n" + bytes(2000)), "not_an_image"),
    "noise.jpg": (lambda p: p.write_bytes(np.random.default_rng(3).bytes(5000)), "not_an_image"),
    "garbled.jpg": (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0\x00\x04ab" + b"\x00" * 3000 + b"\xff\xd9"),
                    "corrupt"),
}


def _make_bad(tmp_path, name):
    path = tmp_path / name
    make, _ = BAD[name]
    if make:
        make(path)
    return path


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_file_is_refused_naming_the_file_what_is_wrong_and_what_to_do(tmp_path, name):
    path = _make_bad(tmp_path, name)
    with pytest.raises(ImageError) as caught:
        read_image(path)
    exc = caught.value
    assert exc.code == BAD[name][1]
    message = str(exc)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert ";" in exc.problem  # what is wrong; what to do


# -- the CLI, one answer per photo ---------------------------------------------------------------------

@pytest.fixture
def cli(biometrics_cli):
    return biometrics_cli


def _mixed(tmp_path):
    bad = [_make_bad(tmp_path, n) for n in ("missing.jpg", "folder.jpg", "empty.jpg", "half.jpg", "notes.jpg",
                                             "iphone.jpg")]
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 8
    Image.open(photo("obama_2")).transpose(STORED[8]).save(turned, quality=95, exif=exif.tobytes())
    return [photo("obama_3"), *bad[:3], turned, *bad[3:]], bad


def test_verify_decides_the_good_photos_and_gives_one_error_line_per_bad_file(cli, tmp_path):
    assert cli("enroll", "--reason", "test", "--subject", "obama", *VISITOR, photo("obama_1")).exit_code == 0
    images, bad = _mixed(tmp_path)
    r = cli("verify", "--subject", "obama", *images)
    assert r.exit_code == 1
    errors = r.stderr.strip().splitlines()
    assert len(errors) == len(bad)
    for path, line in zip(bad, errors, strict=True):
        assert line.startswith(f"error: {path}: ")
    assert [line.split(":")[0] for line in r.stdout.splitlines() if not line.startswith(" ")] == \
        [str(images[0]), str(images[4])]
    assert r.stdout.count("verified subject obama") == 2

    r = cli("verify", "--subject", "obama", *images, "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ok"] is False
    assert [row["image"] for row in out["results"]] == [str(p) for p in images]
    by_image = {row["image"]: row for row in out["results"]}
    assert [by_image[str(p)]["error"]["code"] for p in bad] == [BAD[p.name][1] for p in bad]
    assert all(by_image[str(p)]["status"] == "unreadable" and not by_image[str(p)]["accepted"] for p in bad)
    assert by_image[str(images[4])]["decision"] == "biometric.verified"


def test_identify_exits_1_only_for_unreadable_files_and_says_what_to_do_about_no_face(cli, tmp_path):
    g = Gallery(tmp_path / "state")  # 1:N is against staff, who are not enrolled by one CLI call
    g.upsert(Subject("obama", "staff", [template("obama_1")]), source="central")
    g.close()
    small = tmp_path / "far_away.jpg"
    cv2.imwrite(str(small), _on_noise(cv2.resize(frame("obama-720p"), None, fx=0.15, fy=0.15), 4000, 3000))
    r = cli("identify", photo("obama_2"), small, photo("rose_leslie_1"))
    assert r.exit_code == 0, r.output
    assert f"{small}: no decision (no face found: " in r.stdout and "crop closer" in r.stdout
    r = cli("identify", photo("obama_2"), tmp_path / "nope.jpg", "--json")
    out = json.loads(r.stdout)
    assert r.exit_code == 1 and out["ok"] is False
    assert out["results"][0]["subject_id"] == "obama"
    assert out["results"][1]["error"]["code"] == "not_found"


def test_enroll_checks_every_photo_and_enrolls_nothing_unless_all_can_be_used(cli, tmp_path):
    images, bad = _mixed(tmp_path)
    r = cli("enroll", "--reason", "test", "--subject", "obama", *VISITOR, *images)
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert [e.split(": ")[1] for e in errors[:-1]] == [str(p) for p in bad]
    assert errors[-1].startswith(f"error: nothing enrolled: {len(bad)} of {len(images)} photos")
    assert json.loads(cli("gallery", "--json").stdout)["subjects"] == 0  # nothing was written

    r = cli("enroll", "--reason", "test", "--subject", "obama", *VISITOR, *images, "--json")
    out = json.loads(r.stdout)
    assert out["ok"] is False and len(out["images"]) == len(images)
    assert [i["error"]["code"] for i in out["images"] if not i["ok"]] == [BAD[p.name][1] for p in bad]

    r = cli("enroll", "--reason", "test", "--subject", "obama", *VISITOR, images[0], images[4], "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["templates"] == 2


def test_a_real_process_prints_nothing_but_json_on_stdout(tmp_path):
    # A fresh process loads the face models: their log lines must not reach stdout.
    config = tmp_path / "edge.toml"
    config.write_text(dump_toml({"device_id": "gate-1", "site": "site-1", "role": "gate",
                                 "state_dir": str(tmp_path / "state")}))
    empty = _make_bad(tmp_path, "empty.jpg")
    r = subprocess.run([sys.executable, "-m", "edge", "--config", str(config), "biometrics", "enroll", "--reason", "test",
                        "--subject", "obama", "--role", "staff", str(photo("obama_2")), str(empty), "--json"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 1, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert [(i["ok"], i.get("status")) for i in out["images"]] == [(True, None), (False, "unreadable")]
    assert out["images"][1]["error"]["code"] == "empty" and out["error"].startswith("nothing enrolled: 1 of 2")
    # The encoder's converted weights are kept with the device's state, where the daemon finds them.
    assert list((tmp_path / "state" / "biometrics" / "cache").glob("face-resnet-*.npz"))


def test_the_camera_folder_source_skips_and_counts_a_bad_file_and_turns_phone_photos_upright(tmp_path):
    from drivers.camera.capture import FolderSource

    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.open(photo("obama_1")).transpose(STORED[6]).save(tmp_path / "b_turned.jpg", quality=95,
                                                           exif=exif.tobytes())
    (tmp_path / "a_half.jpg").write_bytes(photo("biden_1").read_bytes()[:30_000])  # still being copied
    source = FolderSource(str(tmp_path))
    assert source.read(0.1) is None
    assert source.read(0.1).shape == frame("obama_1").shape
    status = source.status()
    assert (status["frames"], status["unreadable"]) == (1, 1)
    assert status["last_error"].startswith(f"{tmp_path / 'a_half.jpg'}: is cut short")
