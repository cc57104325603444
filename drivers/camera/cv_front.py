"""The first layers of the face ResNet run by OpenCV's DNN module (same weights, same output).

On the 35x35 and 17x17 maps that make up the first half of the network, OpenCV's convolution
(Winograd for 3x3, its own packed kernels) is 2-2.5x faster than im2col + one BLAS product;
on the 8x8 and smaller maps it is not (measured per layer: 0.28 against 0.22 ms for the
128-channel ones), so ``drivers.camera.fast_encoder`` hands only the stem and the first
blocks to it and runs the rest in numpy: 8.8 -> 7.0 ms of CPU a face, outputs within 4e-7.

The network is handed to OpenCV as an ONNX model built here in memory from the weights
(a few protobuf fields; no onnx package): Conv, Relu, MaxPool, AveragePool, Pad (dlib's
shortcut adds a smaller tensor to a larger one top-left, zeros elsewhere) and Add. The
whole descriptor is checked against dlib's own when the encoder loads, so a different OpenCV
that computes otherwise is caught there, and the encoder then runs numpy alone.
"""

from __future__ import annotations

import numpy as np

from drivers.camera.resnet_file import Block, Conv

FRONT_BLOCKS = 7  # the blocks on 35x35 and 17x17 maps (stem, 3 x 32 channels, 4 x 64)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64 as protobuf writes it
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _ints_attr(name: str, values) -> bytes:  # AttributeProto: name 1, ints 8, type 20 (INTS = 7)
    return _bytes(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)


def _tensor(name: str, a: np.ndarray) -> bytes:  # TensorProto: dims 1, data_type 2, name 8, raw 9
    kind = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[a.dtype]
    return b"".join(_int(1, d) for d in a.shape) + _int(2, kind) + _bytes(8, name) + _bytes(9, a.tobytes())


def _value_info(name: str, shape) -> bytes:  # ValueInfoProto with a float tensor type of this shape
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    return _bytes(1, name) + _bytes(2, _bytes(1, _int(1, 1) + _bytes(2, dims)))


class _Graph:
    def __init__(self):
        self.nodes: list[bytes] = []
        self.weights: list[bytes] = []
        self._n = 0

    def _name(self, kind: str) -> str:
        self._n += 1
        return f"{kind}{self._n}"

    def op(self, kind: str, inputs: list[str], attrs: list[bytes] = ()) -> str:
        out = self._name(kind.lower())
        self.nodes.append(b"".join(_bytes(1, i) for i in inputs) + _bytes(2, out) + _bytes(3, out)
                          + _bytes(4, kind) + b"".join(_bytes(5, a) for a in attrs))
        return out

    def constant(self, a: np.ndarray) -> str:
        name = self._name("w")
        self.weights.append(_tensor(name, np.ascontiguousarray(a)))
        return name

    def conv(self, x: str, shape: tuple, c: Conv, relu: bool) -> tuple[str, tuple]:
        k = c.weight.shape[2]
        y = self.op("Conv", [x, self.constant(c.weight), self.constant(c.bias)],
                    [_ints_attr("kernel_shape", [k, k]), _ints_attr("pads", [c.pad] * 4),
                     _ints_attr("strides", [c.stride] * 2)])
        size = [(n + 2 * c.pad - k) // c.stride + 1 for n in shape[1:]]
        return (self.op("Relu", [y]) if relu else y), (c.weight.shape[0], *size)

    def pool(self, kind: str, x: str, shape: tuple, k: int) -> tuple[str, tuple]:
        y = self.op(kind, [x], [_ints_attr("kernel_shape", [k, k]), _ints_attr("strides", [2, 2])])
        return y, (shape[0], *[(n - k) // 2 + 1 for n in shape[1:]])

    def pad_to(self, x: str, shape: tuple, target: tuple) -> str:
        if shape == target:
            return x
        pads = np.array([0, 0, 0, 0, 0, *[t - s for s, t in zip(shape, target, strict=True)]], np.int64)
        return self.op("Pad", [x, self.constant(pads)], [_bytes(1, "mode") + _bytes(4, "constant") + _int(20, 3)])

    def block(self, x: str, shape: tuple, b: Block) -> tuple[str, tuple]:
        y, ys = self.conv(x, shape, b.conv1, relu=True)
        y, ys = self.conv(y, ys, b.conv2, relu=False)
        s, ss = self.pool("AveragePool", x, shape, 2) if b.down else (x, shape)
        both = tuple(max(m, n) for m, n in zip(ys, ss, strict=True))  # dlib's add_prev
        return self.op("Relu", [self.op("Add", [self.pad_to(y, ys, both), self.pad_to(s, ss, both)])]), both


def front_model(stem: Conv, blocks: list[Block], size: int) -> tuple[bytes, tuple[int, int, int]]:
    """ONNX bytes of stem, relu, 3x3/2 max pool and ``blocks``, and the output's (C, H, W)."""
    g = _Graph()
    x, shape = g.conv("x", (3, size, size), stem, relu=True)
    x, shape = g.pool("MaxPool", x, shape, 3)
    for b in blocks:
        x, shape = g.block(x, shape, b)
    graph = (b"".join(_bytes(1, n) for n in g.nodes) + _bytes(2, "face_front")
             + b"".join(_bytes(5, w) for w in g.weights) + _bytes(11, _value_info("x", (1, 3, size, size)))
             + _bytes(12, _value_info(x, (1, *shape))))
    # ModelProto: ir_version 1 (7), opset_import 8 (default domain, 13), graph 7
    return _int(1, 7) + _bytes(8, _bytes(1, "") + _int(2, 13)) + _bytes(7, graph), shape


class Front:
    """The first layers as one OpenCV network: ``forward((3, H, W) float32) -> (C, h, w)``."""

    def __init__(self, stem: Conv, blocks: list[Block], size: int):
        import cv2

        model, self.shape = front_model(stem, blocks, size)
        self._net = cv2.dnn.readNetFromONNX(np.frombuffer(model, np.uint8))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._net.setInput(x[None])
        return self._net.forward()[0]
