"""python-tuf's fetcher with a total deadline and a throughput floor for every download.

ngclient's own fetcher (``Urllib3Fetcher``) bounds each socket read, not a download: a
repository, or anyone on the path, that sends a byte every few seconds keeps one fetch,
and so the update thread, alive for days. ``BoundedFetcher`` gives each download
(metadata and targets alike, through ``download_file``, which ngclient calls with the
file's length limit)

- a deadline: ``allowance_s + max_length / min_rate`` seconds, from the request to the
  last byte, headers included;
- a floor: once ``allowance_s + rate_window_s`` have passed, fewer than
  ``min_rate * rate_window_s`` bytes in the last ``rate_window_s`` abandons it.

A watchdog thread per download enforces both even while a read is blocked (in the
status line and headers too, which ``http.client`` reads in a loop of its own): it shuts
the connection's socket down, and the download raises ``DownloadTooSlow``, a
``DownloadError`` that ngclient passes up unchanged. The length limits python-tuf
enforces (``download_file``'s ``max_length``) are kept: this class only adds time.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO

import tuf
import urllib3
from tuf.api import exceptions as tx
from tuf.ngclient._internal.proxy import ProxyEnvironment
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

_CHUNK = 64 * 1024  # read1: whatever has arrived, up to this; progress is seen as it comes


@dataclass(frozen=True)
class FetchLimits:
    """How long a download may take: see the module docstring."""

    allowance_s: float = 30.0
    min_rate: float = 20_000.0  # bytes per second
    rate_window_s: float = 30.0
    read_timeout_s: float = 30.0  # one read with no byte at all (urllib3's own timeout)

    def deadline_s(self, max_length: int) -> float:
        return self.allowance_s + max_length / self.min_rate


class DownloadTooSlow(tx.DownloadError):
    """A download passed its deadline or fell below the throughput floor and was abandoned."""

    def __init__(self, url: str, received: int, elapsed_s: float, limit: str, why: str):
        super().__init__(f"{url}: abandoned after {received} bytes in {elapsed_s:.1f} s: {why}")
        self.url, self.received, self.elapsed_s, self.limit = url, received, elapsed_s, limit


def _cut(sock) -> None:
    """Unblock a read on ``sock`` in another thread (the plain socket's shutdown: for TLS too)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError, ValueError):
        pass  # already closed: nothing left to unblock


class _Watch:
    """One download's clock; trips at most once, then cuts every socket it was given."""

    def __init__(self, url: str, limits: FetchLimits, max_length: int, clock: Callable[[], float]):
        self.url, self.limits, self.clock = url, limits, clock
        self.deadline = limits.deadline_s(max_length)
        self.max_length = max_length
        self.start = clock()
        self.received = 0
        self.tripped: DownloadTooSlow | None = None
        self._socks: list = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._samples: deque[tuple[float, int]] = deque([(0.0, 0)])
        self._tick = max(0.02, min(1.0, limits.rate_window_s / 10))
        self._thread = threading.Thread(target=self._run, name="update-fetch-watch", daemon=True)
        self._thread.start()

    def attach(self, sock) -> None:
        """A connection about to read the response: cut it at once if the download is over time."""
        with self._lock:
            if self.tripped is None:
                self._socks.append(sock)
                return
        _cut(sock)

    def got(self, n: int) -> None:
        self.received += n
        self.raise_if_tripped()
        elapsed = self.clock() - self.start
        if elapsed >= self.deadline:
            self._trip(elapsed, "deadline", self._deadline_text())
            self.raise_if_tripped()

    def raise_if_tripped(self) -> None:
        if self.tripped is not None:
            raise self.tripped

    def close(self) -> None:
        self._done.set()

    def _deadline_text(self) -> str:
        lim = self.limits
        return (f"past the deadline of {self.deadline:.1f} s ({lim.allowance_s:g} s + {self.max_length} bytes "
                f"at {lim.min_rate:g} bytes/s; [update] download_allowance_s, download_min_rate)")

    def _run(self) -> None:
        lim = self.limits
        while not self._done.wait(max(0.0, min(self._tick, self.deadline - (self.clock() - self.start)))):
            elapsed, received = self.clock() - self.start, self.received
            if elapsed >= self.deadline:
                self._trip(elapsed, "deadline", self._deadline_text())
                return
            self._samples.append((elapsed, received))
            while len(self._samples) > 1 and self._samples[1][0] <= elapsed - lim.rate_window_s:
                self._samples.popleft()
            since, base = self._samples[0]
            span = elapsed - since
            if elapsed >= lim.allowance_s + lim.rate_window_s and span >= lim.rate_window_s \
                    and received - base < lim.min_rate * span:
                self._trip(elapsed, "min_rate",
                           f"below the floor of {lim.min_rate:g} bytes/s: {received - base} bytes in the last "
                           f"{span:.1f} s ([update] download_min_rate, download_rate_window_s)")
                return

    def _trip(self, elapsed: float, limit: str, why: str) -> None:
        with self._lock:
            if self.tripped is not None or self._done.is_set():
                return
            self.tripped = DownloadTooSlow(self.url, self.received, elapsed, limit, why)
            socks, self._socks = self._socks, []
        for sock in socks:
            _cut(sock)


_current = threading.local()  # the download in progress on this thread (ngclient fetches one at a time)


def _attach(sock) -> None:
    watch = getattr(_current, "watch", None)
    if watch is not None and sock is not None:
        watch.attach(sock)


class _WatchedHTTP(urllib3.connection.HTTPConnection):
    def getresponse(self):  # type: ignore[override]
        _attach(self.sock)  # connected and the request sent: the status line and headers come next
        return super().getresponse()


class _WatchedHTTPS(urllib3.connection.HTTPSConnection):
    def getresponse(self):  # type: ignore[override]
        _attach(self.sock)
        return super().getresponse()


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


class _WatchedPools(ProxyEnvironment):
    """ngclient's proxy handling (http_proxy, no_proxy, ...), with connections that report their socket."""

    def get_pool_manager(self, scheme, host):
        manager = super().get_pool_manager(scheme, host)
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


class BoundedFetcher(Urllib3Fetcher):
    """``Urllib3Fetcher`` whose every download has a deadline and a throughput floor."""

    def __init__(self, limits: FetchLimits | None = None, *, clock: Callable[[], float] = time.monotonic,
                 app_user_agent: str | None = None):
        self.limits = limits or FetchLimits()
        super().__init__(socket_timeout=self.limits.read_timeout_s, chunk_size=_CHUNK,
                         app_user_agent=app_user_agent)
        agent = f"python-tuf/{tuf.__version__}"
        self._proxy_env = _WatchedPools(headers={"User-Agent": f"{app_user_agent} {agent}" if app_user_agent
                                                 else agent})
        self._clock = clock

    @contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO]:
        watch = _Watch(url, self.limits, max_length, self._clock)
        _current.watch = watch
        with ExitStack() as stack:
            try:
                temp_file = stack.enter_context(super().download_file(url, max_length))
            except Exception as exc:
                # A cut socket surfaces as whatever the read saw (EOF, reset, a protocol
                # error, a short body): say what really happened.
                if watch.tripped is not None and exc is not watch.tripped:
                    raise watch.tripped from exc
                raise
            finally:
                watch.close()
                _current.watch = None
            yield temp_file

    def _fetch(self, url: str) -> Iterator[bytes]:
        watch = getattr(_current, "watch", None)
        try:
            response = self._proxy_env.request("GET", url, preload_content=False,
                                               timeout=urllib3.Timeout(self.socket_timeout))
        except urllib3.exceptions.MaxRetryError as exc:
            if watch is not None:
                watch.raise_if_tripped()
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise tx.SlowRetrievalError from exc
            raise
        if watch is not None:
            watch.raise_if_tripped()
        if response.status >= 400:
            response.close()
            raise tx.DownloadHTTPError(f"HTTP error occurred with status {response.status}", response.status)
        return self._read(response, watch)

    def _read(self, response, watch: _Watch | None) -> Iterator[bytes]:
        try:
            while chunk := response.read1(self.chunk_size):
                if watch is not None:
                    watch.got(len(chunk))
                yield chunk
            if watch is not None:
                watch.raise_if_tripped()  # a cut socket can read as a clean end of the body
        except urllib3.exceptions.TimeoutError as exc:  # no byte at all for read_timeout_s
            if watch is not None:
                watch.raise_if_tripped()
            raise tx.SlowRetrievalError from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if watch is not None:
                watch.raise_if_tripped()
            raise tx.DownloadError(f"Failed to download {response.geturl() or 'a file'}: {exc}") from exc
        finally:
            if watch is not None and watch.tripped is not None:
                response.close()  # the socket is cut: never back into the pool
            else:
                response.release_conn()
