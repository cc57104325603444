"""``EDGE_…`` environment variables over the TOML file, key by key.

``EDGE_SITE`` sets ``site``; ``EDGE_STORE__MAX_BYTES`` sets ``store.max_bytes`` (``__`` goes
one table down, to any depth) and leaves the file's other ``[store]`` keys alone; a list, a
table or an array of tables is given as JSON (``EDGE_MQTT__BROKERS='["mqtts://b:8883"]'``).
Names are case-insensitive. A variable naming no top-level key is ignored; an unknown key
inside a table reaches validation, which refuses it and names the variable.

These are the rules pydantic-settings applied for us. Its import (asyncio, dotenv, argparse,
the cloud secret providers: 72 modules) stayed resident in the daemon, 1.5 MB on a tablet.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from collections import deque
from collections.abc import Mapping, Sequence, Set
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

PREFIX = "EDGE_"
DELIMITER = "__"
_CONTAINERS = (BaseModel, Mapping, Sequence, Set, deque)


def env_values(model: type[BaseModel], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The values ``EDGE_`` variables give ``model``'s fields, as a nested dict."""
    environ = os.environ if environ is None else environ
    prefix = PREFIX.lower()
    env = {k.lower(): v for k, v in environ.items() if k.lower().startswith(prefix)}
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = prefix + name.lower()
        value = env.get(key)
        if not _complex(field.annotation):
            if value is not None:
                out[name] = value  # pydantic converts the string as it would a TOML value
            continue
        if value is not None:
            value = _json(value)
        nested = _explode(field.annotation, {k[len(key) + len(DELIMITER):]: v for k, v in env.items()
                                             if k.startswith(key + DELIMITER)})
        if isinstance(value, dict):
            value = merge(value, nested)
        elif value is None and nested:
            value = nested
        if value is not None:
            out[name] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins, table by table (a new dict; neither argument changes)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = (merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, dict)
                    else value)
    return out


def _explode(annotation: Any, items: dict[str, str]) -> dict[str, Any]:
    """``{"max_bytes": "5"}`` under ``store``; ``{"a__b": v}`` becomes ``{"a": {"b": v}}``."""
    result: dict[str, Any] = {}
    for rest, raw in items.items():
        *path, last = rest.split(DELIMITER)
        target, node = annotation, result
        for key in path:
            target = _child(target, key)
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break  # a JSON value was given at this level already: it stands
        else:
            target = _child(target, last)
            node[last] = _json(raw) if raw and target is not None and _complex(target) else raw
    return result


def _child(annotation: Any, key: str) -> Any:
    """The annotation of ``key`` one table below ``annotation``; None when it has no such key."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(key)
        return field.annotation if field is not None else None
    if get_origin(annotation) in (dict, Mapping) and len(get_args(annotation)) == 2:
        return get_args(annotation)[1]
    return None


def _complex(annotation: Any) -> bool:
    """Given as JSON: models, dataclasses and containers, or a union holding one."""
    annotation = _unwrap(annotation)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_complex(arg) for arg in get_args(annotation))
    kind = origin or annotation
    if not isinstance(kind, type) or issubclass(kind, str | bytes):
        return False
    return issubclass(kind, _CONTAINERS) or dataclasses.is_dataclass(kind)


def _unwrap(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _json(raw: str) -> Any:
    """The decoded value; the string itself when it is not JSON, so that validation says what is wrong."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw
