"""dlib's face ResNet run outside dlib: the same 128-d descriptors, several times faster.

The dlib wheel the gate installs is built without BLAS: its network runs single-threaded on
its own matrix code (about 55 ms a face). Here the same weights (read by
``drivers.camera.resnet_file``, batch-norm folded into the convolutions) run as im2col + one
BLAS matrix product per convolution (about 9 ms); opt-in, the stem and the blocks on 35x35
and 17x17 maps in OpenCV's DNN module instead (``drivers.camera.cv_front``: about 7 ms in all,
about 10 MB more resident). The chip is still cut by dlib (``get_face_chip``, size 150, padding 0.25: what
``compute_face_descriptor`` feeds its net).

Conversion is cached per model file (keyed by its sha256) with a digest of the arrays, a
reference chip and dlib's own descriptor of that chip. Every load runs the chip again and
compares with dlib's descriptor, so a corrupt or stale cache, a wrong conversion or a broken
BLAS is caught before the first face: the cache is rebuilt, and if the fresh conversion still
does not match dlib, ``EncoderUnavailable`` says why and the caller falls back to dlib.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from drivers.camera._log import get_logger
from drivers.camera.cv_front import FRONT_BLOCKS, Front
from drivers.camera.resnet_file import Block, Conv, ResNet, ResNetFileError, read_resnet
from edge.errors import EdgeError

log = get_logger("edge.biometrics.encoder")

FORMAT = 1
TOLERANCE = 1e-4  # max abs difference from dlib's descriptor on the reference chip
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # as dlib's compute_face_descriptor cuts its chip


class EncoderUnavailable(EdgeError):
    """The fast encoder cannot be used on this model file or machine; ``str()`` says why."""


class CacheInvalid(EdgeError):
    """A cached conversion is unreadable, for another model file, or does not match its digest."""


class FastEncoder:
    """Descriptors of 150x150 RGB face chips, computed from dlib's weights outside dlib.

    ``front`` (opt-in): the stem and the first blocks run in OpenCV's DNN module
    (``drivers.camera.cv_front``: same arithmetic, about 2x faster on those layers, about
    10 MB more resident), the rest in numpy; without OpenCV's DNN, everything in numpy.
    """

    name = "numpy"

    def __init__(self, net: ResNet, front: bool = False):
        self._mean = np.asarray(net.mean_rgb, np.float32)
        self._fc = np.ascontiguousarray(net.fc, np.float32)
        self.front = None
        blocks = net.blocks
        if front:
            try:
                self.front = Front(net.stem, net.blocks[:FRONT_BLOCKS], net.size)
                blocks = net.blocks[FRONT_BLOCKS:]
            except (ImportError, AttributeError, _cv_error()) as exc:
                log.warning("face_encoder_front_unavailable", reason=f"{type(exc).__name__}: {exc}")
        self._stem = None if self.front else _prepared(net.stem)
        self._blocks = [(_prepared(b.conv1), _prepared(b.conv2), b.down) for b in blocks]

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        """(128,) float32 descriptor of an RGB uint8 chip cut like dlib's."""
        x = ((chip.astype(np.float32) - self._mean) * np.float32(1 / 256)).transpose(2, 0, 1)
        if self.front is not None:
            x = self.front.forward(np.ascontiguousarray(x))
        else:
            x = _max_pool_3x3s2(_conv(x, self._stem, relu=True))
        for conv1, conv2, down in self._blocks:
            y = _add(_conv(_conv(x, conv1, relu=True), conv2), _avg_pool_2x2s2(x) if down else x)
            x = np.maximum(y, 0, out=y)
        return x.mean(axis=(1, 2), dtype=np.float32) @ self._fc

    def encode(self, rgb: np.ndarray, shape, jitters: int = 1) -> np.ndarray:
        """The descriptor of the face at ``shape`` (dlib's 5-point landmarks) in an RGB frame."""
        return self.descriptor(self._chip(rgb, shape, jitters))

    def encode_bgr(self, bgr: np.ndarray, shape, jitters: int = 1) -> np.ndarray:
        """The same from a BGR frame: the chip is cut from it and its channels swapped, which
        is exact (each channel is resampled on its own) and spares converting the whole frame."""
        return self.descriptor(np.ascontiguousarray(self._chip(bgr, shape, jitters)[..., ::-1]))

    @staticmethod
    def _chip(image: np.ndarray, shape, jitters: int) -> np.ndarray:
        import dlib

        if jitters > 1:
            raise ValueError("jittered descriptors are dlib's own (random crops): use the dlib encoder")
        return dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def _cv_error() -> type[Exception]:
    try:
        import cv2

        return cv2.error
    except ImportError:
        return ImportError


def _prepared(c: Conv) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    out_c, _, k, _ = c.weight.shape
    return (np.ascontiguousarray(c.weight.reshape(out_c, -1)), c.bias[:, None].copy(), k, c.stride, c.pad)


def _conv(x: np.ndarray, conv: tuple, relu: bool = False) -> np.ndarray:
    """Convolution of a (C, H, W) map as one matrix product over its im2col columns.

    Padding is written straight into the columns (zeros where a tap falls outside), and the
    bias and ReLU are applied in place: the same arithmetic as padding first, fewer copies.
    """
    w, b, k, s, p = conv
    c, h, wd = x.shape
    ho, wo = (h + 2 * p - k) // s + 1, (wd + 2 * p - k) // s + 1
    cols = (np.zeros if p else np.empty)((c, k, k, ho, wo), np.float32)
    for ky in range(k):
        for kx in range(k):
            # output (oy, ox) reads input (oy * s + ky - p, ox * s + kx - p); taps outside stay 0
            y0, x0 = -(-max(0, p - ky) // s), -(-max(0, p - kx) // s)
            y1, x1 = min(ho, (h - 1 - ky + p) // s + 1), min(wo, (wd - 1 - kx + p) // s + 1)
            iy, ix = y0 * s + ky - p, x0 * s + kx - p
            cols[:, ky, kx, y0:y1, x0:x1] = x[:, iy:iy + s * (y1 - y0 - 1) + 1:s, ix:ix + s * (x1 - x0 - 1) + 1:s]
    y = w @ cols.reshape(c * k * k, ho * wo)
    y += b
    if relu:
        np.maximum(y, 0, out=y)
    return y.reshape(-1, ho, wo)


def _max_pool_3x3s2(x: np.ndarray) -> np.ndarray:
    n = (x.shape[1] - 3) // 2 + 1
    out = x[:, 0:2 * n - 1:2, 0:2 * n - 1:2].copy()
    for ky in range(3):
        for kx in range(3):
            np.maximum(out, x[:, ky:ky + 2 * n - 1:2, kx:kx + 2 * n - 1:2], out=out)
    return out


def _avg_pool_2x2s2(x: np.ndarray) -> np.ndarray:
    n = (x.shape[1] - 2) // 2 + 1
    out = x[:, 0:2 * n - 1:2, 0:2 * n - 1:2] + x[:, 0:2 * n - 1:2, 1:2 * n:2]
    out += x[:, 1:2 * n:2, 0:2 * n - 1:2]
    out += x[:, 1:2 * n:2, 1:2 * n:2]
    out *= np.float32(0.25)
    return out


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: tensors of different sizes add where they overlap (top-left), zeros elsewhere."""
    if a.shape == b.shape:
        a += b  # a is the block's fresh output, never a caller's array
        return a
    out = np.zeros(tuple(max(m, n) for m, n in zip(a.shape, b.shape, strict=True)), np.float32)
    out[:a.shape[0], :a.shape[1], :a.shape[2]] += a
    out[:b.shape[0], :b.shape[1], :b.shape[2]] += b
    return out


def reference_chip() -> np.ndarray:
    """A fixed 150x150 RGB test chip (smoothed noise: every layer gets non-trivial input)."""
    import cv2

    rng = np.random.default_rng(150)
    noise = rng.integers(0, 256, (CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


_DLIB_REFERENCE = """
import sys, dlib, numpy as np
chip = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape({n}, {n}, 3)
vec = dlib.face_recognition_model_v1(sys.argv[1]).compute_face_descriptor(chip)
sys.stdout.buffer.write(np.asarray(vec, "<f8").tobytes())
"""


def dlib_reference(model_file: Path, chip: np.ndarray) -> np.ndarray:
    """dlib's own descriptor of a chip, computed in a child process.

    A child, so the gate process never holds dlib's copy of the network next to ours (its
    memory is not given back to the system when freed).
    """
    try:
        r = subprocess.run([sys.executable, "-c", _DLIB_REFERENCE.format(n=chip.shape[0]), str(model_file)],
                           input=np.ascontiguousarray(chip).tobytes(), capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EncoderUnavailable(f"could not run dlib for the reference descriptor: {exc}") from None
    if r.returncode or len(r.stdout) != 128 * 8:
        raise EncoderUnavailable(f"dlib reference run failed: {r.stderr.decode(errors='replace')[-300:]}")
    return np.frombuffer(r.stdout, "<f8").astype(np.float32)


def _arrays(net: ResNet) -> dict[str, np.ndarray]:
    convs = [net.stem] + [c for b in net.blocks for c in (b.conv1, b.conv2)]
    out = {f"w{i}": c.weight for i, c in enumerate(convs)} | {f"b{i}": c.bias for i, c in enumerate(convs)}
    out["conv_stride_pad"] = np.array([(c.stride, c.pad) for c in convs], np.int64)
    out["down"] = np.array([b.down for b in net.blocks], bool)
    out["fc"] = net.fc
    out["mean_rgb"] = np.array(net.mean_rgb, np.float64)
    out["size"] = np.array(net.size, np.int64)
    return out


def _net(arrays: dict[str, np.ndarray]) -> ResNet:
    sp = arrays["conv_stride_pad"]
    convs = [Conv(arrays[f"w{i}"], arrays[f"b{i}"], int(s), int(p)) for i, (s, p) in enumerate(sp)]
    blocks = [Block(convs[1 + 2 * i], convs[2 + 2 * i], bool(d)) for i, d in enumerate(arrays["down"])]
    mean = tuple(float(v) for v in arrays["mean_rgb"])
    return ResNet(mean_rgb=mean, size=int(arrays["size"]), stem=convs[0], blocks=blocks, fc=arrays["fc"])


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def cache_path(cache_dir: Path, model_sha: str) -> Path:
    return Path(cache_dir) / f"face-resnet-{model_sha[:16]}.npz"


def save_cache(path: Path, model_sha: str, net: ResNet, chip: np.ndarray, reference: np.ndarray) -> None:
    """Write atomically (temporary file, then rename): a crash leaves the old file or none."""
    arrays = _arrays(net) | {"chip": chip, "reference": reference.astype(np.float32)}
    meta = {"format": np.array(FORMAT), "model_sha256": np.array(model_sha), "digest": np.array(_digest(arrays))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays, **meta)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_cache(path: Path, model_sha: str) -> tuple[ResNet, np.ndarray, np.ndarray]:
    """(net, reference chip, dlib's descriptor of it); ``CacheInvalid`` unless intact and for this model."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CacheInvalid(f"unreadable: {type(exc).__name__}: {exc}") from None
    try:
        fmt, sha, digest = int(arrays.pop("format")), str(arrays.pop("model_sha256")), str(arrays.pop("digest"))
        if fmt != FORMAT or sha != model_sha:
            raise CacheInvalid(f"made by format {fmt} for model {sha[:16]}")
        if _digest(arrays) != digest:
            raise CacheInvalid("contents do not match their digest")
        chip, reference = arrays.pop("chip"), arrays.pop("reference")
        return _net(arrays), chip, reference
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CacheInvalid(f"incomplete: {type(exc).__name__}: {exc}") from None


def _checked(net: ResNet, chip: np.ndarray, reference: np.ndarray, tolerance: float,
             front: bool = False) -> FastEncoder:
    encoder = FastEncoder(net, front=front)
    diff = float(np.abs(encoder.descriptor(chip) - reference).max())
    if not diff <= tolerance and encoder.front is not None:  # this OpenCV computes otherwise: numpy alone
        log.warning("face_encoder_front_mismatch", max_abs_diff=diff, tolerance=tolerance)
        encoder = FastEncoder(net, front=False)
        diff = float(np.abs(encoder.descriptor(chip) - reference).max())
    if not diff <= tolerance:
        raise EncoderUnavailable(f"descriptor differs from dlib's by {diff:.2e} (tolerance {tolerance:.0e})")
    return encoder


def load(model_file: Path, cache_dir: Path | None, tolerance: float = TOLERANCE, front: bool = False) -> FastEncoder:
    """The fast encoder for ``model_file``, verified against dlib; ``EncoderUnavailable`` if it cannot be.
    ``front``: its first blocks in OpenCV's DNN module (``FastEncoder``)."""
    try:
        data = Path(model_file).read_bytes()
    except OSError as exc:
        raise EncoderUnavailable(f"cannot read {model_file}: {exc}") from None
    model_sha = hashlib.sha256(data).hexdigest()
    path = cache_path(cache_dir, model_sha) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            net, chip, reference = load_cache(path, model_sha)
            return _checked(net, chip, reference, tolerance, front)
        except (CacheInvalid, EncoderUnavailable) as exc:
            log.warning("face_encoder_cache_rebuilt", path=str(path), reason=str(exc))
    try:
        net = read_resnet(data)
    except ResNetFileError as exc:
        raise EncoderUnavailable(f"{Path(model_file).name}: {exc}") from None
    del data
    chip = reference_chip()
    reference = dlib_reference(Path(model_file), chip)
    encoder = _checked(net, chip, reference, tolerance, front)
    if path is not None:
        try:
            save_cache(path, model_sha, net, chip, reference)
        except OSError as exc:  # read-only or full disk: convert again next start
            log.warning("face_encoder_cache_not_written", path=str(path), reason=str(exc))
    return encoder


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edge"
