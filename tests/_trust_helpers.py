"""A second local operator for two-person tests: another uid on the control socket.

The test runs as root; the second operator is ``nobody`` (uid/gid 65534), so the
daemon's SO_PEERCRED check sees two different accounts, as on a real device.
The daemon must set ``commands.local_group = "nogroup"`` so nobody may open the
socket. The child reaches the socket through a directory fd opened by root, so
pytest's private temporary folders need not be opened up.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

NOBODY = 65534
SECOND_OPERATOR_CONFIG = {"local_group": "nogroup"}


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("a second local operator needs root to switch to another uid")


def as_second_operator(state_dir, request: dict, timeout: float = 60.0) -> dict:
    """Send one control-socket request as uid ``nobody``; returns the daemon's answer."""
    needs_root()
    state_dir = Path(state_dir)
    os.chmod(state_dir, os.stat(state_dir).st_mode | 0o001)  # search (not read) for others
    dirfd = os.open(state_dir, os.O_PATH)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(f"/proc/self/fd/{dirfd}/control.sock")
            sock.sendall(json.dumps(request).encode() + b"\n")
            os.write(w, sock.makefile("rb").readline())
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(w, json.dumps({"status": "error", "detail": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.close(dirfd)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def approve(state_dir, approval_id: str) -> dict:
    return as_second_operator(state_dir, {"approve": approval_id})
