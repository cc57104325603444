#!/usr/bin/env python3
"""Generate docs/configuration.md from the settings models; --check to detect drift.

Usage: scripts/gen_config_reference.py [--check] [--out docs/configuration.md]
The daemon's settings are the model edge.config hands out (``settings_model()`` when it has
one, else ``Settings``), walked through pydantic's ``model_fields``; every driver kind
registered under the ``edge.drivers`` entry-point group adds its ``Config`` model. Nothing
here names a section or a driver: a new section or driver family shows up by itself, and
the text comes from the models' own ``description=`` and docstrings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts._generated import write_or_check  # noqa: E402

DRIVER_GROUP = "edge.drivers"
DANGER = "DANGEROUS"  # a description that says this marks an opt-in that weakens a safeguard
_NONE = type(None)
_PLURAL = {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans",
           "path": "paths", "path to an existing file": "paths to existing files",
           "path to an existing folder": "paths to existing folders"}


def settings_model() -> type[BaseModel]:
    """The daemon's settings model, looked up at run time (it may be assembled from plug-ins)."""
    import edge.config as config

    factory = getattr(config, "settings_model", None)
    return factory() if callable(factory) else config.Settings


def driver_kinds() -> list[tuple[str, type]]:
    """(kind, driver class) of every registered driver, by kind."""
    from importlib.metadata import entry_points

    return [(ep.name, ep.load()) for ep in sorted(entry_points(group=DRIVER_GROUP), key=lambda e: e.name)]


@dataclass
class Row:
    key: str
    type: str
    default: str
    env: str
    description: str

    @property
    def dangerous(self) -> bool:
        return DANGER in self.description


@dataclass
class Section:
    level: int
    title: str
    intro: list[str]
    rows: list[Row] = field(default_factory=list)
    kind: str = ""  # the driver kind whose options these are; "" for the daemon's settings


@dataclass
class _Where:
    """Where a model sits: its TOML table path, the prefix of its keys, its environment prefix."""

    toml: str        # "gate.lanes.<name>" (headings)
    key: str         # "gate.lanes.<name>." (row keys)
    env: str | None  # "EDGE_GATE__" or None inside a list/table of names (no variable reaches it)
    array: bool = False


# -- types -------------------------------------------------------------------------------------

def _unwrap(tp: Any, meta: list[Any]) -> tuple[Any, list[Any]]:
    """Strip Annotated layers (collecting their metadata) and Optional."""
    while True:
        if typing.get_origin(tp) is Annotated:
            meta = [*tp.__metadata__, *meta]
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and _NONE in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not _NONE]
            if len(rest) != 1:
                return tp, meta  # a union of several: type_text names each but None
            tp = rest[0]
        else:
            return tp, meta


def _flat(meta: list[Any]) -> list[Any]:
    out: list[Any] = []
    for m in meta:
        out += _flat(list(m.metadata)) if isinstance(m, FieldInfo) else [m]
    return out


def _model(tp: Any) -> type[BaseModel] | None:
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _num(value: Any, bytes_: bool) -> str:
    text = _toml(value)
    if bytes_ and isinstance(value, int) and value >= 1024:
        for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


def _bounds(meta: list[Any], bytes_: bool) -> str:
    lo = next(((">", m.gt) for m in meta if isinstance(m, at.Gt)), None) or \
        next((("≥", m.ge) for m in meta if isinstance(m, at.Ge)), None)
    hi = next((("<", m.lt) for m in meta if isinstance(m, at.Lt)), None) or \
        next((("≤", m.le) for m in meta if isinstance(m, at.Le)), None)
    if lo and hi and lo[0] == "≥" and hi[0] == "≤":
        return f" from {_num(lo[1], bytes_)} to {_num(hi[1], bytes_)}"
    parts = [f"{op} {_num(v, bytes_)}" for op, v in (b for b in (lo, hi) if b)]
    return (" " + " and ".join(parts)) if parts else ""


def _length(meta: list[Any]) -> tuple[int | None, int | None]:
    lo = next((m.min_length for m in meta if isinstance(m, at.MinLen)), None)
    hi = next((m.max_length for m in meta if isinstance(m, at.MaxLen)), None)
    return lo, hi


def _count(lo: int | None, hi: int | None, one: str, many: str) -> str:
    """``exactly 2 strings``, ``1 to 32 integers``, ``at least 1 entry``."""
    noun = lambda n: one if n == 1 else many  # noqa: E731
    if lo is not None and lo == hi:
        return f"exactly {lo} {noun(lo)}"
    if lo and hi is not None:
        return f"{lo} to {hi} {many}"
    if lo:
        return f"at least {lo} {noun(lo)}"
    return f"at most {hi} {noun(hi)}" if hi is not None else many


def type_text(tp: Any, meta: list[Any] = (), name: str = "") -> str:
    """A field's type in words: ``integer ≥ 1``, ``path to an existing file``, ``one of: "a", "b"``."""
    from edge.config_files import InputDir, InputFile, WorkDir

    tp, meta = _unwrap(tp, list(meta))
    meta = _flat(meta)
    inputs = {id(InputFile.__metadata__[0]): "path to an existing file",
              id(InputDir.__metadata__[0]): "path to an existing folder",
              id(WorkDir.__metadata__[0]): "path to a folder (made when missing)"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set, frozenset):
        item = type_text(args[0]) if args else "value"
        lo, hi = _length(meta)
        word, _, rest = item.partition(" ")
        if item in _PLURAL:
            return f"list of {_count(lo, hi, item, _PLURAL[item])}"
        if word in _PLURAL and rest.startswith(("matching", "from", "≥", ">", "≤", "<")):
            return f"list of {_count(lo, hi, word, _PLURAL[word])} {rest}"
        return f"list of {_count(lo, hi, 'item', 'items')}, each {item}"
    for m in meta:
        if id(m) in inputs:
            return inputs[id(m)]
    if origin is Literal:
        return "one of: " + ", ".join(f"`{_toml(a)}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args if a is not _NONE)
    if origin is dict:
        key, value = (type_text(a) for a in args) if args else ("string", "value")
        keys = "" if key == "string" else f" (keys {key})"
        return "table of any keys" if value == "any value" else f"table{keys} of {_PLURAL.get(value, value)}"
    bytes_ = "bytes" in name
    if tp is bool:
        return "boolean"
    if tp is int:
        return "integer" + _bounds(meta, bytes_)
    if tp is float:
        return "number" + _bounds(meta, bytes_)
    if tp is str:
        lo, hi = _length(meta)
        pattern = next((m.pattern for m in meta if getattr(m, "pattern", None)), None)
        text = "string" if (lo, hi) == (None, None) else "non-empty string" if (lo, hi) == (1, None) \
            else f"string of {_count(lo, hi, 'character', 'characters')}"
        return text + (f" matching `{pattern}`" if pattern else "")
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "path"
    if tp is dt.time:
        return 'time of day, `"HH:MM"`'
    if tp is Any:
        return "any value"
    return getattr(tp, "__name__", str(tp))


# -- values ------------------------------------------------------------------------------------

def _toml(value: Any) -> str:
    """A value as it is written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | PurePath):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, dt.time):
        return json.dumps(value.strftime("%H:%M"))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return _toml(value.model_dump())
    return repr(value)


def default_text(info: FieldInfo, name: str) -> str:
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return "unset"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"`{_toml(value)}`" + _num(value, "bytes" in name)[len(_toml(value)):]
    return f"`{_toml(value)}`"


# -- walking the models ------------------------------------------------------------------------

def _doc(cls: type) -> str:
    """The class's own docstring (not one inherited from BaseModel), first paragraph."""
    doc = cls.__dict__.get("__doc__")
    text = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ") if doc else ""
    return text.replace("``", "`")  # reST literals read as Markdown ones


def _child(kind: str, model: type[BaseModel], info: FieldInfo, name: str, at_: _Where,
           level: int, skip: set[str], out: list[Section]) -> None:
    toml = f"{at_.toml}.{name}" if at_.toml else name
    key = f"{at_.key}{name}"
    env = f"{at_.env}{name.upper()}" if at_.env is not None else None
    intro = [t for t in (info.description, _doc(model)) if t]
    if kind == "list":
        lo, hi = _length(_flat(list(info.metadata)))
        need = "required" if info.is_required() else "optional"
        intro.append(f"An array of tables, {need}" + (f", {_count(lo, hi, 'entry', 'entries')}" if lo or hi else "")
                     + (f"; environment: `{env}` (the whole list, as JSON)" if env else "") + ".")
        title, where = f"`[[{toml}]]`", _Where(toml, f"{key}[].", None, array=True)
    elif kind == "dict":
        need = "required" if info.is_required() else "optional"
        intro.append(f"One table per name, {need}" + (f"; environment: `{env}` (all of them, as JSON)" if env else "")
                     + ".")
        toml = f"{toml}.<name>"
        title, where = f"`[{toml}]`", _Where(toml, f"{key}.<name>.", None)
    else:
        title = f"`[{toml}]`"
        where = _Where(toml, f"{key}.", f"{env}__" if env else None, at_.array)
    walk(model, where, level, skip, out, title=title, intro=intro)


def walk(model: type[BaseModel], where: _Where, level: int, skip: set[str], out: list[Section],
         title: str, intro: list[str]) -> list[Section]:
    """Append the section of ``model`` and, after it, those of its nested models, in field order."""
    section = Section(level, title, intro)
    out.append(section)
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        tp, meta = _unwrap(info.annotation, list(info.metadata))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        below = level + 1 if where.toml else level  # the root's tables sit beside its own keys
        if _model(tp):
            _child("model", tp, info, name, where, below, set(), out)
        elif origin is list and args and _model(_unwrap(args[0], [])[0]):
            _child("list", _unwrap(args[0], [])[0], info, name, where, below, set(), out)
        elif origin is dict and len(args) == 2 and _model(_unwrap(args[1], [])[0]):
            _child("dict", _unwrap(args[1], [])[0], info, name, where, below, set(), out)
        else:
            env = f"`{where.env}{name.upper()}`" if where.env is not None else ""
            if env and origin in (list, tuple, set, frozenset, dict):
                env += " (JSON)"
            section.rows.append(Row(f"{where.key}{name}", type_text(info.annotation, info.metadata, name),
                                    default_text(info, name), env, info.description or ""))
    return out


def settings_sections(model: type[BaseModel]) -> list[Section]:
    prefix = model.model_config.get("env_prefix")
    delim = model.model_config.get("env_nested_delimiter")
    # Without a nested delimiter pydantic-settings maps top-level keys only: say so by showing none.
    env = prefix.upper() if prefix is not None and delim == "__" else None
    return walk(model, _Where("", "", env), 3, set(), [], title="Top-level keys",
                intro=[t for t in (_doc(model),) if t])


def driver_sections(kinds: list[tuple[str, type]]) -> list[Section]:
    from edge.driver import DriverConfig

    out: list[Section] = []
    common = set(DriverConfig.model_fields)
    for kind, cls in kinds:
        config = cls.Config
        intro = [t for t in (_doc(cls), _doc(config)) if t]
        intro.append(f'`kind = "{kind}"`; class `{config.__module__}.{config.__qualname__}`.')
        start = len(out)
        walk(config, _Where("drivers", "", None, array=True), 3, common, out, title=f"`{kind}`", intro=intro)
        for section in out[start:]:
            section.kind = kind
    return out


# -- rendering ---------------------------------------------------------------------------------

def _text(text: str) -> str:
    """Markdown text with a <name> shown rather than taken for an HTML tag."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # outside code spans only
        parts[i] = parts[i].replace("<", "&lt;")
    return "`".join(parts)


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")  # a bar would end the column


def _table(rows: list[Row]) -> list[str]:
    lines = ["| key | type | default | environment | description |", "|---|---|---|---|---|"]
    for r in rows:
        key = f"`{r.key}`" + (" **⚠ dangerous**" if r.dangerous else "")
        lines.append(f"| {key} | {_cell(r.type)} | {_cell(r.default)} | {_cell(r.env)} | {_cell(r.description)} |")
    return lines


def _sections(sections: list[Section]) -> list[str]:
    lines: list[str] = []
    for s in sections:
        lines += ["", f"{'#' * min(s.level, 6)} {s.title}"]
        lines += ["", _text(" ".join(s.intro))] if s.intro else []
        lines += [""] + _table(s.rows) if s.rows else []
    return lines


HEADER = """\
# Configuration reference

Generated from the settings models by `scripts/gen_config_reference.py`: do not edit
it by hand; a test fails when it is stale. The text of each key is the `description`
of its field in the code.

The configuration is one TOML file (`/etc/edge/edge.toml`, `--config PATH` or
`$EDGE_CONFIG`); `config/gate.example.toml` and `config/tablet.example.toml` are
worked examples, and `edge config check` validates a file (exit 78 on any problem,
one line per key). Types: *number* accepts a decimal (`0.5`) or an integer; a
*path to an existing file* or *folder* must be there and readable when the daemon
starts. Each key below that has an environment variable can be set by it instead;
the variable wins over the file. List and table values in a variable are JSON, e.g.
`EDGE_MQTT__BROKERS='["mqtts://broker.example:8883"]'`. A variable that names no
setting (`EDGE_STORE_MAX_BYTES`, one underscore) changes nothing: `edge config check`
and `edge run`'s log name it, with the closest real one.

Options marked **⚠ dangerous** can switch a safeguard off; their defaults keep it
on, and the description says which setting is dangerous. Set one only knowingly, and
for as short a time as you can."""


def render(settings: type[BaseModel] | None = None, kinds: list[tuple[str, type]] | None = None) -> str:
    """The whole page. ``settings`` and ``kinds`` default to what is installed (tests pass others)."""
    settings = settings_model() if settings is None else settings
    kinds = driver_kinds() if kinds is None else kinds
    daemon, drivers = settings_sections(settings), driver_sections(kinds)
    dangerous = [(r, s) for s in daemon + drivers for r in s.rows if r.dangerous]
    lines = [HEADER]
    if dangerous:
        lines += ["", "The dangerous options:", ""]
        lines += [f"- `{r.key}`" + (f" (driver kind `{s.kind}`)" if s.kind else "") for r, s in dangerous]
    lines += ["", "## The daemon's settings"]
    lines += _sections(daemon)
    lines += ["", "## Driver options", "",
              "The keys of a `[[drivers]]` table besides `name` and `kind`, for each kind registered "
              "under the `edge.drivers` entry-point group (`edge drivers list` shows them). "
              "Nested tables of an entry are written `[drivers.KEY]` right after its `[[drivers]]` line."]
    lines += _sections(drivers)
    return "\n".join(lines) + "\n"


def undescribed(settings: type[BaseModel] | None = None, kinds: list[tuple[str, type]] | None = None) -> list[str]:
    """Keys whose field has no description (the reference would show an empty cell)."""
    settings = settings_model() if settings is None else settings
    kinds = driver_kinds() if kinds is None else kinds
    out = [r.key for s in settings_sections(settings) for r in s.rows if not r.description]
    out += [f"{kind}: {r.key}" for kind, cls in kinds for s in driver_sections([(kind, cls)])
            for r in s.rows if not r.description]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "configuration.md")
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file differs from the models.")
    args = parser.parse_args(argv)
    text = render()
    return write_or_check(args.out, text, check=args.check,
                          stale_hint=" with the settings models; run scripts/gen_config_reference.py")


if __name__ == "__main__":
    sys.exit(main())
