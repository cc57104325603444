"""Limits checked where they bite: finite numbers, a state folder the daemon can write.

pydantic checks each field's own range; what it cannot see from a field alone is
here: a float that is ``inf`` or ``nan`` passes ``ge=0`` (``rate = inf`` ran flat
out), and a ``state_dir`` that is a file, sits under a file or is read-only only
failed when the store opened (a traceback and exit 1, which systemd restarts
forever). Both become configuration errors: one line each, exit 78.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# The MQTT 5 Session Expiry Interval is a four-byte integer (0xFFFFFFFF: never expires).
SESSION_EXPIRY_MAX_S = 2**32 - 1
# The largest MQTT control packet (256 MiB minus one byte).
MQTT_PACKET_MAX = 268_435_455


def non_finite(value: Any, where: str = "") -> list[str]:
    """One line per float anywhere in ``value`` (a model, list or dict) that is inf or nan."""
    lines: list[str] = []
    if isinstance(value, float):
        if not math.isfinite(value):
            lines.append(f"{where}: got {value!r}; expected a finite number")
    elif isinstance(value, BaseModel):
        fields = dict(value)
        fields.update(value.model_extra or {})
        for key, item in fields.items():
            lines += non_finite(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            lines += non_finite(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            lines += non_finite(item, f"{where}.{key}" if where else str(key))
    return lines


def state_dir_problem(path: Path) -> str | None:
    """None when ``path`` is (or can be made) a folder this process can write; else what is wrong.

    Nothing is created: an absent folder is judged by its nearest existing parent.
    An existing folder is tested by creating and removing a file in it, the only test
    that also sees a read-only mount and, for root, what permission bits do not say.
    """
    path = Path(path)
    if not path.is_absolute():
        return "must be an absolute path"
    probe = path
    try:
        while not probe.exists():
            if probe.is_symlink():
                return f"{probe} is a dangling symbolic link"
            probe = probe.parent
        is_dir = probe.is_dir()
    except OSError as exc:  # a parent folder this user may not enter
        return f"cannot be reached: {exc.strerror or exc} ({exc.filename}) for uid {os.geteuid()}"
    if not is_dir:
        if probe == path:
            return "exists but is not a folder"
        return f"cannot be created: {probe} is a file, not a folder"
    return _writable(probe, creating=probe != path)


def _writable(folder: Path, *, creating: bool) -> str | None:
    what = f"cannot be created in {folder}" if creating else "is not writable"
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return f"{what}: the file system is mounted read-only"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{what} (permission denied for uid {os.geteuid()})"
    name = folder / f".edge-write-test.{os.getpid()}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return f"{what}: the file system is mounted read-only"
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return None  # writable; a full disk is a run-time condition the store handles
        return f"{what}: {exc.strerror or exc}"
    os.close(fd)
    name.unlink(missing_ok=True)
    return None


def check_state_dir(settings, config_file: Path | str) -> None:
    """Raise ConfigError (exit 78) when ``settings.state_dir`` cannot be the daemon's folder."""
    from edge.errors import ConfigError

    problem = state_dir_problem(settings.state_dir)
    if problem is not None:
        raise ConfigError([f"{config_file}: state_dir: got {str(settings.state_dir)!r}; {problem}; "
                           "expected a folder the edge service can write"])
