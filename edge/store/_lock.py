"""One writer per state directory: a second `edge run` must not fork the seq and the chain."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from edge.errors import StoreError

LOCK_NAME = "store.lock"


class StoreLock:
    """An exclusive flock on state_dir/store.lock, held while the store is open.

    The kernel drops it when the process dies (kill -9 included), so there is never
    a stale lock to clean up after a crash.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise StoreError(
                f"the event store in {state_dir} is in use by another process (pid {holder}); "
                "stop it first (systemctl stop edge) — two writers would fork seq and the audit chain"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
