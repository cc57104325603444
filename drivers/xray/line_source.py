"""Line records from a scanner's serial or TCP event stream: the codec, no I/O.

One record per line, either a JSON object (the same keys as a result file,
with ``image_sha256``/``image_bytes`` instead of a file name) or
``key=value`` pairs separated by spaces, values optionally double-quoted::

    scan_id=S1 scanner=SC-1 time=2026-01-31T09:15:00Z subject=A1 operator=op7 reason=intelligence
      outcome=suspicious regions=10,20,30,40,dense;50,60,5,5 decision=search dose_usv=2.5

``LineSplitter`` bounds memory: a line longer than ``max_bytes`` is dropped
as it streams past (never buffered whole) and reported once; the next
newline resynchronises, so the following records are not lost.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drivers.xray.scan import ScanRejected

FORMAT = "line"


@dataclass(frozen=True, slots=True)
class Overlong:
    """A line that exceeded the bound; ``bytes`` counts what was discarded (incl. newline)."""

    bytes: int


class LineSplitter:
    """Splits a byte stream into lines of at most ``max_bytes`` (without the newline)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._discarding = 0  # >0 while skipping the rest of an overlong line

    def feed(self, chunk: bytes) -> Iterator[bytes | Overlong]:
        start = 0
        while start < len(chunk):
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if self._discarding:
                self._discarding += len(piece)
            elif len(self._buf) + len(piece) > self.max_bytes:
                self._discarding = len(self._buf) + len(piece)
                self._buf.clear()
            else:
                self._buf += piece
            if end < 0:
                return
            start = end + 1
            if self._discarding:
                yield Overlong(self._discarding + 1)
                self._discarding = 0
            else:
                line, self._buf = bytes(self._buf), bytearray()
                yield line

    def reset(self) -> None:
        """Forget a partial line (after a reconnect it cannot be completed)."""
        self._buf.clear()
        self._discarding = 0

    @property
    def pending(self) -> int:
        return len(self._buf)


def record_sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def parse(line: bytes, where: str) -> dict[str, Any]:
    """One line (without newline) -> Scan fields."""
    try:
        text = line.decode("utf-8").strip().removesuffix("\r")
    except UnicodeDecodeError as exc:
        raise ScanRejected(f"{where}: not UTF-8 text (byte {exc.start}); line noise or wrong baud rate?") from None
    if text.startswith("{"):
        fields = _json(text, where)
    else:
        fields = _pairs(text, where)
    sha, size = fields.pop("image_sha256", None), fields.pop("image_bytes", None)
    if sha is not None or size is not None:
        fields["image"] = {"sha256": sha, "bytes": size}
    return fields


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ScanRejected(f"{where}: invalid JSON record: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise ScanRejected(f"{where}: wrong schema: expected a JSON object, got {type(doc).__name__}")
    return doc


def _pairs(text: str, where: str) -> dict[str, Any]:
    try:
        tokens = split_words(text)
    except ValueError as exc:
        raise ScanRejected(f"{where}: bad key=value record: {exc}") from None
    fields: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ScanRejected(f"{where}: bad key=value record: {token[:40]!r} has no '='")
        fields[key] = value
    if "regions" in fields:
        fields["regions"] = _regions(fields["regions"], where)
    return fields


# One word as POSIX shell quoting reads it (shlex.split's rules): plain runs, a backslash and
# the character it escapes, '...' (nothing escaped), "..." (only \" and \\ escaped).
# Possessive, so a hostile line costs time in proportion to its length: shlex builds each
# word a character at a time, which is quadratic (2 s for a 100 kB line).
_PART = (r"[^ \t\r\n'\"\\]++"  # plain characters
         r"|\\(?s:.)"  # a backslash and the character it escapes
         r"|'[^']*+'"
         r'|"(?:[^"\\]++|\\(?s:.))*+"')
_PARTS = re.compile(_PART)
_WORD = re.compile(rf"(?:{_PART})++")
_SPACE = re.compile(r"[ \t\r\n]*+")
_DQ_ENDS_ESCAPING = re.compile(r'"(?:[^"\\]++|\\(?s:.))*+\\')  # an unclosed "... ending in a lone backslash
_UNESCAPE_DQ = re.compile(r'\\([\\"])')


def split_words(text: str) -> list[str]:
    """``text`` split into words like ``shlex.split`` (POSIX mode, no comments), in linear time.

    ValueError, with shlex's words, for an unclosed quote or a backslash at the end."""
    words, pos, end = [], _SPACE.match(text).end(), len(text)
    while pos < end:
        word = _WORD.match(text, pos)
        if word is None:
            raise ValueError(_unreadable(text, pos))
        words.append("".join(_unquote(part) for part in _PARTS.findall(word.group())))
        pos = _SPACE.match(text, word.end()).end()
        if pos == word.end() and pos < end:  # a word ended on a quote or backslash it could not take
            raise ValueError(_unreadable(text, pos))
    return words


def _unreadable(text: str, pos: int) -> str:
    """What shlex says of a quote never closed or a backslash with nothing after it at ``pos``."""
    if text[pos] == "\\" or (text[pos] == '"' and _DQ_ENDS_ESCAPING.fullmatch(text, pos)):
        return "No escaped character"
    return "No closing quotation"


def _unquote(part: str) -> str:
    first = part[0]
    if first == "'":
        return part[1:-1]
    if first == '"':
        return _UNESCAPE_DQ.sub(r"\1", part[1:-1])
    if first == "\\":
        return part[1]
    return part


def _regions(text: str, where: str) -> list[dict[str, Any]]:
    regions = []
    for part in filter(None, text.split(";")):
        values = part.split(",")
        if len(values) not in (4, 5):
            raise ScanRejected(f"{where}: regions: {part[:40]!r} is not x,y,w,h[,label]")
        region: dict[str, Any] = dict(zip(("x", "y", "w", "h"), values[:4], strict=True))
        if len(values) == 5:
            region["label"] = values[4]
        regions.append(region)
    return regions
