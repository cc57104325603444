"""Durable file operations, shared by everything that must survive a power cut.

A rename is only durable once its directory is fsync'd; a key file must never
be read half-written or world-readable. These are easy to get subtly wrong, so
there is one implementation.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edge.errors import EdgeError


class KeyFileError(EdgeError):
    """A secret key file cannot be created or is unsafe to use."""


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames and new names in ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def secret_key(path: str | os.PathLike, nbytes: int = 32) -> bytes:
    """A random key kept in ``path``: created 0600 on first use, refused if others can read it.

    Several processes (daemon, worker, CLI) may start at once: the key is written
    to a private temporary file and hard-linked into place, so exactly one creator
    wins and nobody reads a half-written key.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except PermissionError:
            raise KeyFileError(f"{path.parent}: cannot create {path.name} here (permission denied); "
                               "run this as the user the edge service runs as") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(nbytes))
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            fsync_dir(path.parent)
        except FileExistsError:
            pass  # another process won the race: use its key
        finally:
            tmp.unlink(missing_ok=True)
    loose = path.stat().st_mode & 0o077
    if loose:
        raise KeyFileError(f"{path}: key file is readable by group/others (mode {oct(loose)}); "
                           f"run: chmod 600 {path}")
    try:
        key = path.read_bytes()
    except PermissionError:
        raise KeyFileError(f"{path}: permission denied; run this as the user the edge service "
                           "runs as (e.g. sudo -u edge ...)") from None
    if len(key) != nbytes:
        raise KeyFileError(f"{path}: expected a {nbytes}-byte key, found {len(key)} bytes; "
                           "restore the key from backup (data sealed with it cannot be read otherwise)")
    return key
