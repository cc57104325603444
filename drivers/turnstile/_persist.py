"""What the driver remembers across restarts: each controller's last event number and counters.

Without it, after a daemon restart the first counters read is only a baseline
(passages while the edge was down are not reported as a gap), and a bus
controller re-sends the last event it was never told we stored. The file is
replaced atomically but not fsync'd: after a power cut it may be a moment
old, which can only repeat an event or over-report a gap, never hide one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from drivers.turnstile._state import DeviceState
from edge.errors import DriverError


def load(path: Path, devices: dict[int, DeviceState]) -> None:
    """Fill ``devices`` from ``path``; a missing file is a first start, a bad one an error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise DriverError(f"{path}: cannot read the turnstile state file ({exc})") from None
    try:
        for key, saved in data["devices"].items():
            dev = devices.get(int(key))
            if dev is None:
                continue  # a controller no longer configured
            dev.last_seq = int(saved["last_seq"])
            counters = saved["counters"]
            if counters is not None:
                dev.counters = {"in": int(counters["in"]), "out": int(counters["out"])}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DriverError(f"{path}: the turnstile state file is not what this version wrote ({exc!r})") from None


def save(path: Path, devices: dict[int, DeviceState]) -> None:
    data = {"devices": {str(a): {"last_seq": d.last_seq, "counters": d.counters} for a, d in devices.items()}}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        raise DriverError(f"{path}: cannot write the turnstile state file: {exc}") from None
