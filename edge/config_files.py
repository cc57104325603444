"""Files and folders a configuration names, checked before the daemon relies on them.

A setting typed ``InputFile`` or ``InputDir`` (in the core's sections or in a
driver's own options) must name something that exists and that this process
can read when the config is checked and when the daemon starts: a missing CA
file is a configuration error (exit 78) that names the key and the file, not a
daemon that starts and retries a TLS handshake forever.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel


class _Input:
    """Marks a Path setting as something the device must already have."""

    def __init__(self, kind: str):
        self.kind = kind  # "file" | "dir"


InputFile = Annotated[Path, _Input("file")]
InputDir = Annotated[Path, _Input("dir")]
# A file holding a secret (a private key, a password): also refused when others may read or write it.
SecretFile = Annotated[Path, _Input("secret")]
# A folder the device may create on first use: it exists, or can be made inside an existing one.
WorkDir = Annotated[Path, _Input("workdir")]


def missing_inputs(model: BaseModel, prefix: str = "") -> list[str]:
    """One line per named file or folder that is missing or unreadable: ``key: problem``."""
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        where = f"{prefix}{name}"
        kind = _input_kind(field.annotation, field.metadata)
        if kind is not None:
            for i, path in _paths(value):
                key = where if i is None else f"{where}[{i}]"
                if (problem := problem_with(Path(path), kind)) is not None:
                    lines.append(f"{key}: {problem}")
        elif isinstance(value, BaseModel):
            lines += missing_inputs(value, f"{where}.")
    return lines


def problem_with(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot serve as an input ``kind`` (file|dir|workdir), or None when it can."""
    if kind == "workdir":
        return _workdir_problem(path)
    if kind == "secret":
        return problem_with(path, "file") or _secret_problem(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path} not found; expected an existing, readable {kind}"
    except PermissionError:
        return f"{path} cannot be reached: {_denied(path, os.R_OK, 'permission denied on a folder above it')}"
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    is_dir = path.is_dir()
    if kind == "file" and is_dir:
        return f"{path} is a folder; expected a file"
    if kind == "dir" and not is_dir:
        return f"{path} is not a folder"
    if kind == "file" and not path.is_file():
        return f"{path} is not a regular file (mode {oct(st.st_mode)})"
    mode = os.R_OK | (os.X_OK if kind == "dir" else 0)
    if not os.access(path, mode):
        return f"{path} is not readable by this user (uid {os.geteuid()}): {_denied(path, mode, 'fix its owner or mode')}"
    return None


def _denied(path: Path, mode: int, fallback: str) -> str:
    from edge.access import denied_hint

    return denied_hint(path, mode) or fallback


def _secret_problem(path: Path) -> str | None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o007:
        return (f"{path} holds a secret and is readable or writable by others (mode {mode:04o}); "
                f"expected 0600 or 0640: chmod o-rwx {path}")
    return None


def _workdir_problem(path: Path) -> str | None:
    if path.is_dir():
        return problem_with(path, "dir")
    if path.exists() or path.is_symlink():
        return f"{path} is not a folder"
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        return f"{path} cannot be made: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path} does not exist and cannot be made in {parent} (not writable by uid {os.geteuid()})"
    return None


def _paths(value: Any) -> list[tuple[int | None, Any]]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    return [(None, value)]


def _input_kind(annotation: Any, metadata: list[Any]) -> str | None:
    """``file``/``dir`` when the annotation (maybe inside Optional or list) carries a marker."""
    for meta in metadata:
        if isinstance(meta, _Input):
            return meta.kind
    if typing.get_origin(annotation) is Annotated:
        return _input_kind(None, list(annotation.__metadata__))
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            if (kind := _input_kind(arg, [])) is not None:
                return kind
    return None
