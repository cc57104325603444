"""Wake the daemon's main loop: from any thread, and on a signal whichever thread received it.

CPython runs a Python signal handler only in the main thread, and only when that thread
runs bytecode. The kernel hands a process's SIGTERM to any of its threads that does not
block it; when that is a worker, a main thread asleep in a lock wait (Event.wait) is not
interrupted and sleeps on to its timeout: a stop that took 10 s one time in several. The
C-level handler always writes the signal number to the wakeup fd, so the main loop waits
on that (select), and other threads poke the same socket for a status refresh.
"""

from __future__ import annotations

import select
import signal
import socket


class Wakeup:
    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._installed = False

    def install(self) -> None:
        """Main thread only: signals now also write to this socket."""
        signal.set_wakeup_fd(self._w.fileno(), warn_on_full_buffer=False)
        self._installed = True

    def poke(self) -> None:
        try:
            self._w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already full (a wake-up is pending) or closed at shutdown

    def wait(self, timeout: float) -> None:
        """Sleep until a poke, a signal, or ``timeout``; what woke us is drained."""
        select.select([self._r], [], [], timeout)
        try:
            while self._r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        if self._installed:
            signal.set_wakeup_fd(-1)
            self._installed = False
        self._r.close()
        self._w.close()
