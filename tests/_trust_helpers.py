"""A second local operator for two-person tests: another uid on the control socket.

The test runs as root; the second operator is ``nobody`` (uid/gid 65534), so the
daemon's SO_PEERCRED check sees two different accounts, as on a real device.
The daemon must set ``commands.local_group = "nogroup"`` so nobody may open the
socket. The child (the system's python3, which nobody may run) reaches the
socket through a directory fd opened by root, so pytest's private temporary
folders need not be opened up.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

NOBODY = 65534
SECOND_OPERATOR_CONFIG = {"local_group": "nogroup"}
_SYSTEM_PYTHON = "/usr/bin/python3"
_CLIENT = """
import json, socket, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(float(sys.argv[3]))
sock.connect(f"/proc/self/fd/{sys.argv[1]}/control.sock")
sock.sendall(sys.argv[2].encode() + b"\\n")
sys.stdout.buffer.write(sock.makefile("rb").readline())
"""


def as_second_operator(state_dir, request: dict, timeout: float = 60.0, *,
                       groups: list[int] | None = None) -> dict:
    """Send one control-socket request as uid ``nobody``; returns the daemon's answer.

    ``groups``: nobody's supplementary groups, with the state directory's mode left as it is
    (as an operator account on a device); by default none, and others may search the folder."""
    if os.geteuid() != 0 or not os.access(_SYSTEM_PYTHON, os.X_OK):
        pytest.skip("a second local operator needs root and the system's python3")
    state_dir = Path(state_dir)
    if groups is None:
        os.chmod(state_dir, os.stat(state_dir).st_mode | 0o001)  # search (not read) for others
    dirfd = os.open(state_dir, os.O_PATH)
    try:
        done = subprocess.run([_SYSTEM_PYTHON, "-I", "-c", _CLIENT, str(dirfd), json.dumps(request), str(timeout)],
                              user=NOBODY, group=NOBODY, extra_groups=groups or [], pass_fds=(dirfd,), cwd="/",
                              capture_output=True, timeout=timeout + 10, env={"PATH": "/usr/bin:/bin"})
    finally:
        os.close(dirfd)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout)


def approve(state_dir, approval_id: str) -> dict:
    return as_second_operator(state_dir, {"approve": approval_id})
