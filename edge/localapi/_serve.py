"""The local API's connection handling: one selector thread, a bounded pool of workers.

Thread-per-connection let 2 000 idle connections hold 2 000 threads forever, and
a slowloris client hold one thread per trickled request. Here one thread owns
every socket: it accepts (up to ``max_connections``, then a quick 503), reads
bytes into each connection's buffer, and only hands a *complete* request (headers
and body) to a worker. So an idle or slow client costs a buffer, never a worker,
and a request that is not complete within ``request_timeout_s`` of its first byte
gets a 408; a connection idle for ``idle_timeout_s`` is closed, and at the
connection cap the longest-idle connection is closed to make room (only when
every connection is mid-request does a new one get a 503). Workers (at most
``workers``) run the handlers; when every worker is busy and the queue is full,
the answer is a 503 with Retry-After. The listen backlog is sized for a burst.
"""

from __future__ import annotations

import json
import queue
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("edge.localapi")
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Limits:
    max_connections: int = 256
    workers: int = 8
    queue: int = 64
    backlog: int = 256
    request_timeout_s: float = 10.0
    idle_timeout_s: float = 60.0
    max_body: int = 8 * 1024 * 1024
    max_buffered: int = 64 * 1024 * 1024


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    buf: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0
    reading: bool = False  # a request has begun: its deadline is the request timeout


def _quick(sock: socket.socket, status: str, code: str, message: str, retry: bool = False) -> None:
    """A short JSON error written without blocking (best effort), then close."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    retry_after = "Retry-After: 1\r\n" if retry else ""
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n{retry_after}\r\n").encode()
    try:
        sock.setblocking(False)
        sock.send(head + body)
    except OSError:
        pass
    finally:
        sock.close()


class Serve:
    """Owns the listening socket and every connection; ``handle(conn, request_bytes)`` runs on a worker
    and returns True to keep the connection open for the next request."""

    def __init__(self, listener: socket.socket, limits: Limits,
                 handle: Callable[[socket.socket, bytes], bool]):
        self.listener, self.limits, self._handle = listener, limits, handle
        listener.listen(limits.backlog)  # connects queue from here on, before the thread runs
        listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._returned: queue.SimpleQueue = queue.SimpleQueue()
        self._jobs: queue.Queue = queue.Queue(maxsize=limits.queue)
        self._conns: dict[Conn, None] = {}  # insertion order: the oldest first (eviction is O(1))
        self._buffered = 0
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._work, name=f"localapi-{i}", daemon=True)
                         for i in range(limits.workers)]
        self.refused = {"connections": 0, "busy": 0, "timeouts": 0}

    # -- selector thread ---------------------------------------------------------------------

    def run(self) -> None:
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.sel.register(self._wake_r, selectors.EVENT_READ, None)
        for w in self._workers:
            w.start()
        while not self._stop.is_set():
            for key, _ in self.sel.select(self._next_timeout()):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self._wake_r:
                    self._wake_r.recv(4096)
                    self._take_returned()
                else:
                    self._read(key.data)
            self._expire(time.monotonic())
        self._close_all()

    def _next_timeout(self) -> float | None:
        if not self._conns:
            return None  # idle tablet: no periodic wake-ups
        soonest = min(c.deadline for c in self._conns)
        return max(0.0, min(soonest - time.monotonic(), 1.0))

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: stop accepting this round
                log.warning("localapi_accept_failed", error=str(exc))
                return
            if len(self._conns) >= self.limits.max_connections and not self._evict_idle():
                self.refused["connections"] += 1
                _quick(sock, "503 Service Unavailable", "too_many_connections",
                       "the tablet API has too many open connections; retry", retry=True)
                continue
            sock.setblocking(False)
            conn = Conn(sock, deadline=time.monotonic() + self.limits.idle_timeout_s)
            self._conns[conn] = None
            self.sel.register(sock, selectors.EVENT_READ, conn)

    def _evict_idle(self) -> bool:
        """At the connection cap, the connection idle longest makes room: a flood of idle
        connections then costs the flooder its own oldest ones, never a new client."""
        oldest = next((c for c in self._conns if not c.reading), None)
        if oldest is None:
            return False
        self.refused["connections"] += 1
        self._drop(oldest)
        return True

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if not conn.reading:
            conn.reading, conn.deadline = True, time.monotonic() + self.limits.request_timeout_s
        conn.buf += data
        self._buffered += len(data)
        if self._buffered > self.limits.max_buffered:
            self.refused["busy"] += 1
            self._refuse(conn, "503 Service Unavailable", "busy", "too much data in flight; retry")
            return
        self._dispatch(conn)

    def _complete(self, conn: Conn) -> int | None:
        """Length of the first complete request in the buffer, or None (still arriving)."""
        end = conn.buf.find(_HEADER_END, 0, _MAX_HEADER_BYTES + 4)
        if end < 0:
            if len(conn.buf) > _MAX_HEADER_BYTES:
                return len(conn.buf)  # the handler answers 431 from what it has
            return None
        head = bytes(conn.buf[:end + 2])
        match = _CONTENT_LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        if length > self.limits.max_body:
            return end + 4  # headers only: the handler answers 413 and closes
        total = end + 4 + length
        return total if len(conn.buf) >= total else None

    def _dispatch(self, conn: Conn) -> None:
        size = self._complete(conn)
        if size is None:
            return
        request = bytes(conn.buf[:size])
        del conn.buf[:size]
        self._buffered -= size
        self.sel.unregister(conn.sock)
        self._conns.pop(conn, None)
        try:
            self._jobs.put_nowait((conn, request))
        except queue.Full:
            self.refused["busy"] += 1
            self._buffered -= len(conn.buf)
            _quick(conn.sock, "503 Service Unavailable", "busy", "the tablet API is busy; retry", retry=True)

    def _take_returned(self) -> None:
        while True:
            try:
                conn = self._returned.get_nowait()
            except queue.Empty:
                return
            conn.reading = bool(conn.buf)
            conn.deadline = time.monotonic() + (self.limits.request_timeout_s if conn.reading
                                                else self.limits.idle_timeout_s)
            self._conns[conn] = None
            self.sel.register(conn.sock, selectors.EVENT_READ, conn)
            self._dispatch(conn)  # a pipelined request may already be complete

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns if c.deadline <= now]:
            if conn.reading:
                self.refused["timeouts"] += 1
                self._refuse(conn, "408 Request Timeout", "request_timeout",
                             f"the request was not complete within {self.limits.request_timeout_s:g} s")
            else:
                self._drop(conn)  # idle keep-alive: just close

    def _refuse(self, conn: Conn, status: str, code: str, message: str) -> None:
        self._forget(conn)
        _quick(conn.sock, status, code, message, retry=status.startswith("503"))

    def _drop(self, conn: Conn) -> None:
        self._forget(conn)
        conn.sock.close()

    def _forget(self, conn: Conn) -> None:
        self._buffered -= len(conn.buf)
        conn.buf.clear()
        self._conns.pop(conn, None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass

    # -- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            conn, request = job
            keep = False
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(self.limits.request_timeout_s)  # a client too slow to read its answer
                keep = self._handle(conn.sock, request)
            except OSError:
                keep = False
            if keep and not self._stop.is_set():
                conn.sock.setblocking(False)
                self._returned.put(conn)
                self._wake()
            else:
                self._buffered -= len(conn.buf)
                conn.sock.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    # -- stop --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        while True:  # queued requests are not started any more
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].sock.close()
        for _ in self._workers:
            self._jobs.put(None)

    def _close_all(self) -> None:
        for conn in list(self._conns):
            self._drop(conn)
        self.sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def stats(self) -> dict:
        return {"connections": len(self._conns), "queued": self._jobs.qsize(), "refused": dict(self.refused)}
