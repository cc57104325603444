"""Hypothesis strategies for hostile input: JSON documents, file bytes and serial frames.

What an attacker on the prison network, or a faulty scanner or controller,
can send: non-finite numbers (``NaN``, ``Infinity``, ``1e999``), lone UTF-16
surrogates, deep nesting, huge numbers, wrong types, truncation, bytes that
are not UTF-8. Each strategy starts from a *valid* document or frame and
breaks one thing, so the input gets past the first checks and reaches the
code behind them. Used by ``tests/security/test_fuzz.py`` and ``scripts/fuzz.py``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

#: JSON values as raw text that Python's json module reads but canonical JSON refuses,
#: or that are the wrong type or absurd size for any field.
RAW_VALUES: tuple[str, ...] = (
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0",
    "1" * 5000,                      # over Python's int-from-string digit limit
    "18446744073709551616", "-9223372036854775809", "340282366920938463463374607431768211456",
    '"\\ud800"', '"x\\udfffy"', '"\\u0000"', '"\\u202e"', '""', '"' + "A" * 70_000 + '"',
    "null", "true", "false", "[]", "{}", "[null]", '{"": null}', "0", "-1", "3.5",
    '"1970-01-01T00:00:00Z"', '"9999-12-31T23:59:59-01:00"', '"../../etc/shadow"',
)
_SENTINEL = "\x00hostile\x00"


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indexes) to a value inside ``value``, the root excluded."""
    out: list[tuple] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _with_raw(doc: Any, path: tuple, raw: str, add: bool) -> bytes:
    if add and isinstance(doc, dict):
        text = json.dumps({**doc, "zz_extra": _SENTINEL})
    else:
        text = json.dumps(_replace(doc, path, _SENTINEL))
    return text.replace(json.dumps(_SENTINEL), raw).encode()


@st.composite
def _field_mutation(draw, doc: Any) -> bytes:
    paths = _paths(doc)
    raw = draw(st.sampled_from(RAW_VALUES))
    if not paths:
        return raw.encode()
    return _with_raw(doc, draw(st.sampled_from(paths)), raw, add=draw(st.booleans()))


@st.composite
def _byte_damage(draw, valid: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "insert_ff", "prefix"]))
    if kind == "truncate":
        return valid[:draw(st.integers(0, max(0, len(valid) - 1)))]
    at = draw(st.integers(0, max(0, len(valid) - 1)))
    if kind == "flip":
        return valid[:at] + bytes((valid[at] ^ draw(st.integers(1, 255)),)) + valid[at + 1:] if valid else b"\xff"
    if kind == "insert_ff":
        return valid[:at] + b"\xff\xfe" + valid[at:]
    return draw(st.binary(max_size=64)) + valid


def hostile_json(doc: Any) -> st.SearchStrategy[bytes]:
    """Bytes of a JSON document derived from the valid ``doc`` with one hostile change."""
    valid = json.dumps(doc).encode()
    depth = st.integers(min_value=500, max_value=200_000)
    return st.one_of(
        _field_mutation(doc),
        _byte_damage(valid),
        depth.map(lambda n: b"[" * n + b"]" * n),
        depth.map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.sampled_from(RAW_VALUES).map(str.encode),
        st.binary(max_size=256),
        st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4),
                     max_leaves=20).map(lambda v: json.dumps(v).encode()),
    )


def hostile_bytes(valid: bytes) -> st.SearchStrategy[bytes]:
    """A file or frame derived from ``valid`` (truncated, bytes flipped or inserted), or random bytes."""
    return st.one_of(_byte_damage(valid), st.binary(max_size=512))


def example_count(default: int) -> int:
    """Examples per surface: ``EDGE_FUZZ_EXAMPLES`` when set (scripts/fuzz.py), else ``default``."""
    import os

    try:
        return max(1, int(os.environ.get("EDGE_FUZZ_EXAMPLES", default)))
    except ValueError:
        return default
