"""An event's bytes and ids (``edge.events`` builds on this): canonical JSON, the payload's
encoding on the hot path and the pool of event ids."""

from __future__ import annotations

import json
import os
from json.encoder import c_make_encoder, encode_basestring
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON: sorted keys, no spaces, UTF-8. Used for hashing and signing.

    NaN and Infinity are refused (ValueError): they are not JSON, and central's parsers
    would reject the whole batch that carried them.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def printable(value: str, limit: int = 300) -> str:
    """``value`` cut to ``limit`` and safe to store: lone surrogates become ``\\udXXX`` escapes.

    For text taken from hostile input (an id, a file name) and put into an event:
    canonical JSON refuses lone surrogates, and one must not cost the whole event.
    """
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


class _IdPool:
    """Event ids made 256 at a time from one draw of the kernel's CSPRNG.

    os.urandom releases the GIL around getrandom(2); with many producer threads every
    release costs a wait to get the GIL back, once per event. One draw per 256 ids keeps
    the ids as unpredictable without that, and they are formatted together (0.1 us an id).
    ``list.pop`` is atomic, so no lock is needed; two threads refilling at once only make
    more ids. A forked child drops the ids it
    inherited, so parent and child never hand out the same one.
    """

    _BATCH = 256

    def __init__(self) -> None:
        self.ids: list[str] = []  # make_event pops from it directly
        os.register_at_fork(after_in_child=self.ids.clear)

    def take(self) -> str:
        try:
            return self.ids.pop()
        except IndexError:
            self.ids.extend(self._make())
            return self.take()

    def _make(self) -> list[str]:
        raw = bytearray(os.urandom(16 * self._BATCH))
        raw[6::16] = raw[6::16].translate(_VERSION_4)  # RFC 4122: version 4 in byte 6's high nibble
        raw[8::16] = raw[8::16].translate(_VARIANT)  # and binary 10 atop byte 8
        # Every id in C-level steps, no loop: as hex in groups of 4 digits, 40 characters
        # an id with its separator ("aaaa-bbbb-cccc-dddd-eeee-ffff-gggg-hhhh "), then the
        # dashes a UUID does not have are cut from every id at once, last first.
        text = bytearray(raw.hex("-", 2) + "-", "ascii")
        text[39::40] = b" " * self._BATCH
        del text[34::40]  # ... ffff-gggghhhh
        del text[29::39]  # ... ffffgggghhhh
        del text[4::38]  # aaaabbbb-cccc-dddd-eeee-ffffgggghhhh
        return text.decode().split()


_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT = bytes(b & 0x3F | 0x80 for b in range(256))
ids = _IdPool()


# The standard library's C encoder, made once with canonical_json's settings (json.dumps
# makes a new one per call). No circular-reference markers: the caller only hands it
# plain data (see _plain), where recursion ends.
encode_plain = c_make_encoder(None, None, encode_basestring, None, ":", ",", True, False, False)
_SCALARS = frozenset((str, int, float, bool, type(None)))
# What a native encoder (orjson, where installed) is given: exactly these, in a flat payload.
NATIVE = frozenset((str, int, bool, type(None)))
try:
    import orjson as _orjson
except ImportError:
    dumps, NATIVE_OPTIONS = None, 0
    native_bytes = None  # set below: the standard library's encoder
else:
    dumps = _orjson.dumps
    # Sorted keys; subclasses, datetimes and dataclasses refused (TypeError), never converted.
    NATIVE_OPTIONS = (_orjson.OPT_SORT_KEYS | _orjson.OPT_PASSTHROUGH_SUBCLASS
                      | _orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS)
    # For a payload of str keys and NATIVE values, make_event's hot path: canonical JSON, or
    # TypeError (a key that is not exactly str, an integer past 64 bits, a lone surrogate).
    native_bytes = dumps


def plain(value: Any, depth: int = 0) -> bool:
    """Only exact JSON types (dicts with str keys, lists, str, int, float, bool, None)?
    Those serialise the same whether or not pydantic's JSON mode looked at them first."""
    cls = value.__class__
    if cls in _SCALARS:
        return True
    if depth > 64:
        return False
    if cls is dict:
        for k, v in value.items():
            if k.__class__ is not str or not (v.__class__ in _SCALARS or plain(v, depth + 1)):
                return False
        return True
    if cls is list or cls is tuple:
        for v in value:
            if not (v.__class__ in _SCALARS or plain(v, depth + 1)):
                return False
        return True
    return False


def payload_json(payload: dict) -> str | None:
    """``payload`` as canonical JSON; None when it holds anything but plain JSON data (NaN,
    a datetime, a subclass...): the caller then takes pydantic's path, which decides.

    A flat payload of strings, integers, booleans and None goes through orjson where it is
    installed: for those it writes exactly what the standard library writes. Floats it
    writes otherwise (1e+16 as 1e16), enums and UUIDs it would take itself, integers past
    64 bits it refuses: those take the standard library's encoder, as before.
    """
    native = dumps
    for k, v in payload.items():  # flat payloads: checked here; anything nested: plain
        if k.__class__ is not str:
            return None
        if v.__class__ not in NATIVE:
            if v.__class__ is not float and not plain(v, 1):
                return None
            native = None
    if native is not None:
        try:
            return native(payload, option=NATIVE_OPTIONS).decode()
        except TypeError:  # an integer past 64 bits, a lone surrogate: as below
            pass
    try:
        return "".join(encode_plain(payload, 0))
    except ValueError:  # NaN or Infinity: pydantic's JSON mode makes them null
        return None


def payload_bytes(payload: dict, option: int = 0) -> bytes | None:
    """``payload_json`` encoded; None where it gives None or holds a lone surrogate.
    (make_event's native encoder where orjson is not installed.)"""
    text = payload_json(payload)
    if text is None:
        return None
    try:
        return text.encode()
    except UnicodeEncodeError:
        return None


def standard_bytes(payload: dict, option: int = 0) -> bytes:
    """What ``native_bytes`` is without orjson: the standard library's encoder for a payload
    whose values are NATIVE; TypeError, as orjson's, for a key that is not str or a lone surrogate."""
    for key in payload:
        if key.__class__ is not str:
            raise TypeError("Dict key must be str")
    try:
        return "".join(encode_plain(payload, 0)).encode()
    except UnicodeEncodeError:
        raise TypeError("surrogates not allowed") from None


if native_bytes is None:
    native_bytes = standard_bytes
