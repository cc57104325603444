"""Photo files (enrollment, the CLI, calibration): read upright at a workable size, or say why not.

Photos come from phones and the web, not from the gate's camera: sideways
JPEGs with an EXIF orientation tag, greyscale, 16-bit or transparent PNGs,
CMYK JPEGs, 50-megapixel frames, iPhone HEIC files, half-copied downloads.
``load`` turns each into an upright 8-bit BGR frame, or raises ``ImageError``
whose ``code`` is stable for scripts and whose message names the file, what
is wrong with it and what to do.

The file is checked before it is decoded: its first bytes say what it really
is (whatever its name says), a JPEG or PNG that stops before its image data
ends is refused as truncated (the decoder would fill the rest with grey and
carry on), and the pixel size is read from the header so that a huge photo
is decoded straight at a reduced scale instead of filling memory.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np

from edge.errors import EdgeError

READABLE = "JPEG, PNG, WebP, BMP, TIFF or GIF"
# A face needs about 150 px for its encoding; 16 MP keeps a small face in a wide shot usable
# while a 50 or 200 MP phone photo is decoded at 1/2 or 1/4 scale (about 50 MB of pixels).
WORK_PIXELS = 16_000_000
MAX_PIXELS = 64_000_000  # formats the decoder cannot scale down while decoding are refused above this
MAX_FILE_BYTES = 256 * 2**20


class ImageError(EdgeError):
    """A photo file cannot be used; ``code`` says why (for scripts), the message what to do."""

    def __init__(self, path, code: str, problem: str):
        self.path, self.code, self.problem = str(path), code, problem
        super().__init__(f"{path}: {problem}")


def check(path) -> tuple[str, tuple[int, int] | None]:
    """The checks of ``load`` that need no decoding (cheap): the format and the pixel size if known."""
    data = _read_bytes(Path(path))
    kind = sniff(data, path)
    return kind, _checked_size(kind, data, path)


def load(path) -> np.ndarray:
    """An upright 8-bit BGR frame of at most about ``WORK_PIXELS`` from a photo file."""
    data = _read_bytes(Path(path))
    kind = sniff(data, path)
    size = _checked_size(kind, data, path)
    reduce = 1
    if size and kind == "JPEG":
        while size[0] * size[1] > WORK_PIXELS * reduce * reduce and reduce < 8:
            reduce *= 2
    flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
             8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
    # IMREAD_COLOR (and its reduced forms) turn the frame by its EXIF orientation, convert
    # grey, CMYK, palette and 16-bit images to 8-bit BGR and drop an alpha channel.
    frame = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if frame is None:
        raise ImageError(path, "corrupt", f"is a damaged {kind} file (its image data cannot be decoded); "
                                          f"export the photo again from the original as JPEG or PNG")
    h, w = frame.shape[:2]
    if h * w > WORK_PIXELS:
        scale = (WORK_PIXELS / (h * w)) ** 0.5
        frame = cv2.resize(frame, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return frame


def _read_bytes(path: Path) -> bytes:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "not_found", "no such file; check the path and the file name") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot be opened ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is_directory", "is a folder, not a photo; name the image files in it "
                                               "(e.g. folder/*.jpg)")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "not_a_file", "is not a regular file; give a photo file")
    if st.st_size == 0:
        raise ImageError(path, "empty", "is empty (0 bytes), probably an interrupted copy or download; "
                                        "copy the photo again")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageError(path, "too_large", f"is {st.st_size / 2**20:.0f} MB, far more than a photo; "
                                            f"give a {READABLE} photo")
    if not os.access(path, os.R_OK):
        raise ImageError(path, "unreadable", "cannot be read (permission denied); make it readable by "
                                             "this user or copy it somewhere that is")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(path, "unreadable", f"cannot be read ({exc.strerror}); copy the photo again") from None


_ISO_BRANDS = {  # ISO base media files (ftyp box): what the brand says the file holds
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"), "HEIC"),
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
}


_IPHONE = " (the iPhone's default format)"


def sniff(data: bytes, path="") -> str:
    """What the file holds, from its first bytes (its name may say otherwise); refuses what we cannot read."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(data) > 26 and data[14] in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        brand = _ISO_BRANDS.get(head[8:12]) or next(
            (_ISO_BRANDS[b] for b in (head[16:20], head[20:24], head[24:28]) if b in _ISO_BRANDS), None)
        if brand:
            raise ImageError(path, "unsupported_format",
                             f"is a {brand} photo{_IPHONE if brand == 'HEIC' else ''}, which is not read here; "
                             f"export it as JPEG (iPhone: Settings > Camera > Formats > Most Compatible) "
                             f"or convert it, e.g. with heif-convert")
        raise ImageError(path, "not_an_image", "is a video (MP4/MOV), not a photo; take a still "
                                               f"frame and save it as {READABLE}")
    if head.startswith(b"%PDF"):
        raise ImageError(path, "not_an_image", "is a PDF document, not a photo; export the photo in it "
                                               "as JPEG or PNG")
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ", b"\x00\x00\x00\x0cjP  ")):
        raise ImageError(path, "unsupported_format", "is a JPEG XL or JPEG 2000 image, which is not read "
                                                     "here; convert it to JPEG or PNG")
    if _looks_like_text(data[:4096]):
        raise ImageError(path, "not_an_image", f"is a text file, not an image; give a {READABLE} photo")
    raise ImageError(path, "not_an_image", f"is not an image this reads ({READABLE}); "
                                           f"save the photo as JPEG or PNG")


def _looks_like_text(chunk: bytes) -> bool:
    for cut in range(4):  # a multi-byte character cut at the chunk's end is still text
        try:
            text = chunk[:len(chunk) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return bool(text) and all(c.isprintable() or c in "\r\n\t\f" for c in text)
    return False


def _checked_size(kind: str, data: bytes, path) -> tuple[int, int] | None:
    """(width, height) from the header where it is cheap; refuses truncated JPEG/PNG and huge images."""
    try:
        size = {"JPEG": _jpeg, "PNG": _png, "WebP": _webp, "GIF": _gif, "BMP": _bmp}.get(kind, _none)(data)
    except _Truncated:
        raise ImageError(path, "truncated", f"is cut short (the {kind} file ends before its image data "
                                            f"does), probably an interrupted download or copy; copy the "
                                            f"photo again from its source") from None
    except (_Damaged, struct.error, IndexError):
        raise ImageError(path, "corrupt", f"is a damaged {kind} file (its structure is broken); export the "
                                          f"photo again from the original as JPEG or PNG") from None
    if size and min(size) < 1:
        raise ImageError(path, "corrupt", f"is a {kind} file with no pixels ({size[0]}x{size[1]})")
    limit = WORK_PIXELS * 64 if kind == "JPEG" else MAX_PIXELS  # a JPEG decodes at down to 1/8 scale
    if size and size[0] * size[1] > limit:
        raise ImageError(path, "too_large", f"is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} "
                                            f"megapixels), more than the {limit / 1e6:.0f} read here; scale "
                                            f"it down (a face needs only a few hundred pixels)")
    return size


class _Truncated(Exception):
    pass


class _Damaged(Exception):
    pass


def _none(data: bytes) -> None:
    return None


_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (DHT, JPG and DAC share the range)


def _jpeg(data: bytes) -> tuple[int, int]:
    # Walk the header segments to the first scan; the image data must then reach an EOI marker.
    # Inside scan data a 0xFF byte is always followed by 0x00 or a restart marker, so the first
    # FF D9 after the scan starts is the real end (an EXIF thumbnail's own EOI sits before it).
    i, n, size = 2, len(data), None
    while True:
        if i + 4 > n:
            raise _Truncated
        if data[i] != 0xFF:
            raise _Damaged
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            raise _Damaged  # the end before any image data
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if i + 2 + length > n:
            raise _Truncated
        if marker in _SOF and size is None:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            size = (w, h)
        if marker == 0xDA:
            if size is None:
                raise _Damaged
            if data.find(b"\xff\xd9", i + 2 + length) < 0:
                raise _Truncated
            return size
        i += 2 + length


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise _Truncated if len(data) < 33 else _Damaged
    size = struct.unpack(">II", data[16:24])
    i, n = 8, len(data)
    while i + 8 <= n:  # chunks: length, type, data, crc; the image is complete at IEND
        length, ctype = struct.unpack(">I4s", data[i:i + 8])
        if ctype == b"IEND":
            return size
        i += 12 + length
    raise _Truncated


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        b = data[21:25]
        return 1 + (b[0] | (b[1] & 0x3F) << 8), 1 + (b[1] >> 6 | b[2] << 2 | (b[3] & 0x0F) << 10)
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    raise _Damaged


def _gif(data: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", data[6:10])


def _bmp(data: bytes) -> tuple[int, int]:
    w, h = struct.unpack("<ii", data[18:26])
    return abs(w), abs(h)
