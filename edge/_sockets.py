"""A Unix socket put in place with its mode and group already set: one way for every socket
the daemon serves (the control socket, the tablet's local API).

The socket is bound in a folder made for it next to its final path (0700, so no other
account can swap a link in between bind, chmod and chown, even where the final folder is
writable by others), given its mode and group there, then renamed into place: it is never
reachable with the umask's permissions, and a stale socket left by kill -9 is replaced
atomically.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path


def bind_unix(path: Path, mode: int, prepare: Callable[[Path], None] = lambda _path: None) -> socket.socket:
    """A bound (not yet listening) AF_UNIX stream socket at ``path`` with ``mode``;
    ``prepare(tmp)`` runs on it before it moves into place (a chown). On any error,
    nothing is left behind and the error is raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".s", dir=path.parent))  # short: sun_path holds 107 bytes
    tmp = private / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, mode)
        prepare(tmp)
        os.replace(tmp, path)
    except BaseException:
        sock.close()
        tmp.unlink(missing_ok=True)
        raise
    finally:
        private.rmdir()
    return sock
