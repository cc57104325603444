"""Read dlib's face recognition ResNet file into plain arrays, batch-norm folded into the convolutions.

The file is dlib's own serialization of ``loss_metric<fc_no_bias<128, avg_pool_everything<...>>>``:
integers as a control byte (low nibble: byte count, bit 7: sign) then the bytes little-endian,
floats outside tensors as two such integers (mantissa, exponent), strings as a length then the
bytes, tensors as version 2, four dimensions then raw little-endian float32. The layer details
come input first: the input layer, then each layer's name and fields, then three flag bytes and
three empty tensors (gradients, cached output) that add_layer keeps. ``tag``/``skip`` layers only
appear as version numbers in the header; where the residual adds join is known from dlib's
published architecture (every ``add_prev_`` closes the two-convolution block just before it; a
block followed by ``avg_pool_`` is a downsampling block whose shortcut is the pooled block input).

The reader checks every layer's shape against that architecture and raises ``ResNetFileError``
on anything else, so a different file cannot be run with a wrong graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.errors import EdgeError


class ResNetFileError(EdgeError):
    """The model file is not the ResNet layout this reader understands."""


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, k, k) float32, affine folded in
    bias: np.ndarray  # (out,) float32
    stride: int
    pad: int


@dataclass
class Block:
    """Two 3x3 convolutions (relu between); the shortcut is added, then relu."""

    conv1: Conv
    conv2: Conv
    down: bool  # shortcut = 2x2 average pool (stride 2) of the input, zero-padded to fit


@dataclass
class ResNet:
    mean_rgb: tuple[float, float, float]  # subtracted from 0-255 pixels, then divided by 256
    size: int  # chip side (150)
    stem: Conv  # 7x7 stride 2, then relu and a 3x3 stride 2 max pool
    blocks: list[Block] = field(default_factory=list)
    fc: np.ndarray | None = None  # (in, 128): descriptor = mean-pooled features @ fc


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise ResNetFileError("file ends early")
        control = self.data[self.pos]
        n = control & 0x0F
        if n > 8:
            raise ResNetFileError(f"bad integer at byte {self.pos}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def str(self) -> str:
        n = self.int()
        if not 0 < n < 64:
            raise ResNetFileError(f"bad string length {n} at byte {self.pos}")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("ascii", errors="replace")

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise ResNetFileError(f"unknown tensor version at byte {self.pos}")
        shape = [self.int() for _ in range(4)]
        count = int(np.prod(shape))
        if count < 0 or self.pos + 4 * count > len(self.data):
            raise ResNetFileError(f"tensor {shape} runs past the end of the file")
        out = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos += 4 * count
        return out

    def alias(self) -> list[int]:
        if self.int() != 1:
            raise ResNetFileError(f"unknown alias tensor version at byte {self.pos}")
        return [self.int() for _ in range(4)]

    def layer_tail(self) -> None:
        """add_layer's three flag bytes and its three (empty) gradient/output tensors."""
        self.pos += 3
        for _ in range(3):
            if self.tensor().size:
                raise ResNetFileError("unexpected non-empty cached tensor")


def _read_layers(r: _Reader) -> tuple[tuple[float, float, float], int, list[tuple]]:
    if r.int() != 1 or r.str() != "loss_metric_2":
        raise ResNetFileError("not a dlib loss_metric network")
    r.float(), r.float()  # margin, distance threshold (training only)
    while r.data[r.pos] == 1 and r.data[r.pos + 1] in (1, 2):  # add_layer/tag/skip versions
        r.int()
    if r.int() != 3 or r.str() != "input_rgb_image_sized":
        raise ResNetFileError("unexpected input layer")
    mean = (r.float(), r.float(), r.float())
    rows, cols = r.int(), r.int()
    if rows != cols:
        raise ResNetFileError("input is not square")
    layers: list[tuple] = []
    first = True
    while True:
        name = r.str()
        if name == "con_4":
            params = r.tensor()
            n, kr, kc, sy, sx, py, px = (r.int() for _ in range(7))
            fshape, bshape = r.alias(), r.alias()
            for _ in range(4):
                r.float()  # learning-rate and weight-decay multipliers
            if kr != kc or sy != sx or py != px or fshape[0] != n or bshape[1] != n:
                raise ResNetFileError(f"unsupported convolution {fshape}")
            wcount = int(np.prod(fshape))
            if params.size != wcount + n:
                raise ResNetFileError("convolution parameter count does not match its shape")
            layers.append(("con", params[:wcount].reshape(fshape), params[wcount:], sy, py))
        elif name == "affine_":
            params = r.tensor()
            gamma_shape, _beta_shape = r.alias(), r.alias()
            r.int()  # mode
            c = gamma_shape[1]
            layers.append(("affine", params[:c], params[c:2 * c]))
        elif name in ("relu_", "add_prev_"):
            layers.append((name.split("_")[0],))
        elif name in ("max_pool_2", "avg_pool_2"):
            layers.append((name[:3], *(r.int() for _ in range(6))))
        elif name == "fc_2":
            outputs, inputs = r.int(), r.int()
            params = r.tensor()
            if params.size != outputs * inputs:
                raise ResNetFileError("fc layer has a bias or a wrong size")
            layers.append(("fc", params.reshape(inputs, outputs)))
            return mean, rows, layers
        else:
            raise ResNetFileError(f"unknown layer {name!r}")
        r.layer_tail()
        if first:
            r.int()  # the bottom add_layer's sample expansion factor
            first = False


def _fold(con: tuple, affine: tuple) -> Conv:
    _, w, b, stride, pad = con
    _, gamma, beta = affine
    return Conv(weight=(w * gamma[:, None, None, None]).astype(np.float32),
                bias=(b * gamma + beta).astype(np.float32), stride=stride, pad=pad)


def read_resnet(data: bytes) -> ResNet:
    """Parse the file's bytes; raises ``ResNetFileError`` unless it is the expected layout."""
    try:
        mean, size, layers = _read_layers(_Reader(data))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ResNetFileError(f"unreadable network file: {exc}") from None
    kinds = [layer[0] for layer in layers]
    stem = ["con", "affine", "relu", "max"]
    if kinds[:4] != stem or layers[3][1:] != (3, 3, 2, 2, 0, 0):
        raise ResNetFileError("unexpected stem")
    net = ResNet(mean_rgb=mean, size=size, stem=_fold(layers[0], layers[1]))
    i, block = 4, ["con", "affine", "relu", "con", "affine"]
    while kinds[i] == "con":
        if kinds[i:i + 5] != block:
            raise ResNetFileError(f"unexpected layers at {i}: {kinds[i:i + 5]}")
        down = kinds[i + 5] == "avg"
        if down and layers[i + 5][1:] != (2, 2, 2, 2, 0, 0):
            raise ResNetFileError("unexpected shortcut pool")
        j = i + 5 + down
        if kinds[j:j + 2] != ["add", "relu"]:
            raise ResNetFileError(f"block at {i} is not closed by add_prev, relu")
        c1, c2 = _fold(layers[i], layers[i + 1]), _fold(layers[i + 3], layers[i + 4])
        if c2.stride != 1 or c1.stride != (2 if down else 1) or c1.weight.shape[2] != 3:
            raise ResNetFileError(f"unexpected strides in block at {i}")
        net.blocks.append(Block(c1, c2, down))
        i = j + 2
    if kinds[i:] != ["avg", "fc"] or layers[i][1:] != (0, 0, 1, 1, 0, 0):
        raise ResNetFileError("unexpected head")
    net.fc = layers[i + 1][1]
    return net
