"""A JSON Schema (2020-12) validator for the keywords docs/schemas uses, written from the spec.

The project's models generate those files; validating what a real daemon sends against
the files themselves (not the models) is what a central team in another language does.
The ``jsonschema`` package is not a dependency, so this covers the subset in use and
refuses any other keyword: a schema that starts using one fails the test rather than
passing unchecked.
"""

from __future__ import annotations

import re
from typing import Any

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_ANNOTATIONS = {"$schema", "$defs", "title", "description", "default"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(value: Any, schema: dict, root: dict | None = None, path: str = "$") -> list[str]:
    """Every way ``value`` breaks ``schema``, each naming where (a JSON path)."""
    root = schema if root is None else root
    out: list[str] = []
    for keyword, arg in schema.items():
        check = _KEYWORDS.get(keyword)
        if check is None:
            if keyword not in _ANNOTATIONS:
                out.append(f"{path}: schema keyword {keyword!r} is not supported by this validator")
            continue
        out += check(value, arg, schema, root, path)
    return out


def _ref(value, ref, schema, root, path):
    if not ref.startswith("#/"):
        return [f"{path}: only local $ref supported, got {ref}"]
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return errors(value, node, root, path)


def _type(value, t, schema, root, path):
    names = t if isinstance(t, list) else [t]
    return [] if any(_TYPES[n](value) for n in names) else [f"{path}: {value!r:.60} is not {t}"]


def _properties(value, props, schema, root, path):
    if not isinstance(value, dict):
        return []
    return [e for k, sub in props.items() if k in value for e in errors(value[k], sub, root, f"{path}.{k}")]


def _additional(value, extra, schema, root, path):
    if not isinstance(value, dict):
        return []
    out = []
    for k in value.keys() - schema.get("properties", {}).keys():
        if extra is False:
            out.append(f"{path}: unexpected property {k!r}")
        elif isinstance(extra, dict):
            out += errors(value[k], extra, root, f"{path}.{k}")
    return out


def _required(value, names, schema, root, path):
    return [f"{path}: missing {n!r}" for n in names if isinstance(value, dict) and n not in value]


def _property_names(value, sub, schema, root, path):
    return [e for k in value for e in errors(k, sub, root, f"{path}.<{k}>")] if isinstance(value, dict) else []


def _items(value, sub, schema, root, path):
    if not isinstance(value, list):
        return []
    skip = len(schema.get("prefixItems", []))
    return [e for i, v in enumerate(value[skip:], skip) for e in errors(v, sub, root, f"{path}[{i}]")]


def _prefix_items(value, subs, schema, root, path):
    if not isinstance(value, list):
        return []
    return [e for i, (v, sub) in enumerate(zip(value, subs, strict=False)) for e in errors(v, sub, root, f"{path}[{i}]")]


def _any_of(value, subs, schema, root, path):
    found = [errors(value, sub, root, path) for sub in subs]
    return [] if any(not f for f in found) else [f"{path}: matches none of anyOf: {found}"]


def _same(a, b) -> bool:
    """JSON equality: true is not 1 (Python says it is)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _when(kind, test, message):
    def check(value, arg, schema, root, path):
        return [f"{path}: {value!r:.60} {message} {arg!r}"] if kind(value) and not test(value, arg) else []
    return check


def _is_str(v):
    return isinstance(v, str)


def _is_num(v):
    return _TYPES["number"](v)


def _is_list(v):
    return isinstance(v, list)


_KEYWORDS = {
    "$ref": _ref, "type": _type, "properties": _properties, "additionalProperties": _additional,
    "required": _required, "propertyNames": _property_names, "items": _items, "prefixItems": _prefix_items,
    "anyOf": _any_of,
    "enum": lambda v, arg, schema, root, path: [] if any(_same(v, a) for a in arg) else [
        f"{path}: {v!r} is not one of {arg}"],
    "const": lambda v, arg, schema, root, path: [] if _same(v, arg) else [f"{path}: {v!r} is not {arg!r}"],
    "pattern": _when(_is_str, lambda v, p: re.search(p, v), "does not match"),
    "minLength": _when(_is_str, lambda v, n: len(v) >= n, "is shorter than"),
    "maxLength": _when(_is_str, lambda v, n: len(v) <= n, "is longer than"),
    "format": _when(_is_str, lambda v, f: f != "date-time" or _DATE_TIME.match(v), "is not a"),
    "minimum": _when(_is_num, lambda v, n: v >= n, "is below"),
    "maximum": _when(_is_num, lambda v, n: v <= n, "is above"),
    "exclusiveMinimum": _when(_is_num, lambda v, n: v > n, "is not above"),
    "minItems": _when(_is_list, lambda v, n: len(v) >= n, "has fewer items than"),
    "maxItems": _when(_is_list, lambda v, n: len(v) <= n, "has more items than"),
}
