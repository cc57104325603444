"""A serial line without hardware: a pty whose slave end is reachable at a fixed symlink.

The driver is configured with the symlink path, so "unplugging" (closing the
master and removing the link) and "plugging back in" (a new pty, the same link)
look to it exactly like a USB serial adapter going away and coming back.
"""

from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyLine:
    """The device end of a pty; ``path`` is where the host end is reachable."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.master: int | None = None
        self._slave: int | None = None

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def open(self) -> None:
        master, slave = os.openpty()
        # Raw from the start: no echo, no line editing, no CR/LF translation, even before the
        # driver opens its end (pyserial would set raw too, but only once it opens).
        tty.setraw(slave)
        # We keep the slave open ourselves so the master never reads EIO while no host has
        # the port open yet.
        # Non-blocking: with nobody reading the host end, a real line just loses the bytes; a
        # blocking write would instead hang the simulator once the pty buffer (a few KiB) is full.
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)  # atomic: the link never points nowhere while plugged

    def close(self) -> None:
        """Unplug: the host's open file sees a hang-up; the path disappears."""
        self.path.unlink(missing_ok=True)
        for fd in (self.master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self._slave = None
