"""Resumable, verified chunk downloads over MQTT 5 request/response.

Each item being downloaded has exactly one chunk request in flight, and at
most ``concurrency`` items download at once, so a kill -9 costs at most one
chunk per item in flight. A chunk is written only after its sha256 matches
the catalog; a corrupt one is counted and requested again.

Security events go first: before every chunk the downloader waits while
``may_proceed()`` says no (the component checks the outbox for pending
alarm/normal events of security families), and a token bucket caps the
bandwidth learning may take on the shared uplink.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.ratelimit import TokenBucket
from edge.supervisor import SupervisedThread
from services.learning import protocol
from services.learning._cache import ContentCache, CorruptContent, QuotaExceeded
from services.learning._catalog import Item

log = structlog.get_logger("edge.learning.transfer")
_POLL_S = 0.2
# Bounded transfer: a chunk that keeps arriving corrupt (or not at all) is asked for at
# most this often, with a growing pause; an item spends at most ITEM_RETRIES retries in
# all, then fails with its reason and is not queued again before its back-off ends.
CHUNK_ATTEMPTS = 5
ITEM_RETRIES = 20
RETRY_PAUSE_S, RETRY_PAUSE_MAX_S = 0.2, 10.0
FAILED_BACKOFF_S, FAILED_BACKOFF_MAX_S = 60.0, 3600.0


class TransferFailed(EdgeError):
    """An item's retry budget is spent (corrupt chunks, timeouts); it is marked failed."""


@dataclass
class Job:
    item: Item
    chunk_size: int
    course: str
    done_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    def progress(self) -> dict[str, Any]:
        return {"sha256": self.item.sha256, "course": self.course, "name": self.item.name,
                "size": self.item.size, "done_bytes": self.done_bytes}


@dataclass
class _Pending:
    event: threading.Event = field(default_factory=threading.Event)
    payload: bytes = b""
    status: str = ""
    error: str = ""


class Downloader:
    """Worker threads fetching queued items chunk by chunk into the cache."""

    def __init__(self, *, link, site: str, device: str, cache: ContentCache, concurrency: int,
                 rate_limit_bytes_s: int, chunk_timeout_s: float,
                 may_proceed: Callable[[], bool] = lambda: True,
                 pinned: Callable[[], set[str]] = set, on_failed: Callable[[Job, str], None] | None = None,
                 emit: Callable | None = None):
        self.link, self.site, self.device, self.cache = link, site, device, cache
        self.concurrency, self.timeout = concurrency, chunk_timeout_s
        self.may_proceed, self.pinned, self.on_failed = may_proceed, pinned, on_failed
        self.bucket = TokenBucket(rate_limit_bytes_s, max(rate_limit_bytes_s // 4, 1))
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: dict[str, Job] = {}  # queued or running, by sha256
        self._lock = threading.Lock()
        self._pending: dict[bytes, _Pending] = {}
        self._stop = threading.Event()
        self._threads: list[SupervisedThread] = []
        self._emit = emit
        self.paused = False
        self.counters = {"chunks_fetched": 0, "bytes_fetched": 0, "chunks_corrupt": 0,
                         "chunk_timeouts": 0, "items_completed": 0, "items_failed": 0}
        self.last_error: str | None = None
        self.failed: dict[str, dict[str, Any]] = {}  # sha256 -> reason, failures, retry_at (monotonic)

    def start(self) -> None:
        self.link.subscribe(protocol.response_topic(self.site, self.device), self._on_response, qos=1)
        for n in range(self.concurrency):
            t = SupervisedThread(self._work, name=f"learning-dl-{n}", emit=self._emit)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.stop()
        for _ in self._threads:
            self._queue.put(None)  # wakes idle workers at once
        for t in self._threads:
            t.join(timeout=self.timeout + 2)

    def enqueue(self, item: Item, chunk_size: int, course: str) -> bool:
        """Queue an item unless cached or already queued; True if queued now."""
        with self._lock:
            if self.cache.has(item.sha256) or item.sha256 in self._jobs:
                return False
            failed = self.failed.get(item.sha256)
            if failed is not None and time.monotonic() < failed["retry_at"]:
                return False  # failed recently: its back-off bounds how often it is tried
            job = Job(item, chunk_size, course)
            self._jobs[item.sha256] = job
        self._queue.put(job)
        return True

    def in_flight(self) -> list[dict[str, Any]]:
        with self._lock:
            return [j.progress() for j in self._jobs.values()]

    def idle(self) -> bool:
        with self._lock:
            return not self._jobs

    # -- worker ---------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()  # no timeout: stop() queues one None per worker
            if job is None:
                break
            try:
                self._download(job)
            except (QuotaExceeded, CorruptContent, OSError, EdgeError) as exc:
                self._fail(job, str(exc))
            finally:
                with self._lock:
                    self._jobs.pop(job.item.sha256, None)

    def _fail(self, job: Job, reason: str) -> None:
        self.counters["items_failed"] += 1
        self.last_error = reason
        with self._lock:
            n = self.failed.get(job.item.sha256, {}).get("failures", 0) + 1
            pause = min(FAILED_BACKOFF_S * 2 ** (n - 1), FAILED_BACKOFF_MAX_S)
            self.failed[job.item.sha256] = {"reason": reason[:300], "failures": n,
                                            "retry_at": time.monotonic() + pause}
        self.cache.release(job.item.sha256)
        log.warning("learning_download_failed", sha256=job.item.sha256, course=job.course, reason=reason)
        if self.on_failed:
            self.on_failed(job, reason)

    def _download(self, job: Job) -> None:
        item = job.item
        self.cache.reserve(item.sha256, item.size, self.pinned())
        for attempt in range(2):  # a whole-item mismatch after good chunks: try once more
            have = self.cache.resume_state(item.sha256, item.chunks, job.chunk_size)
            job.done_bytes = sum(self._chunk_len(job, i) for i in have)
            if have:
                log.info("learning_download_resumed", sha256=item.sha256, chunks_present=len(have))
            for index in range(len(item.chunks)):
                if index in have:
                    continue
                data = self._fetch(job, index)
                if data is None:
                    return  # stopping: the partial file stays for resume
                self.cache.write_chunk(item.sha256, index, job.chunk_size, data)
                job.done_bytes += len(data)
            try:
                self.cache.commit(item.sha256, item.size)
            except CorruptContent:
                if attempt:
                    raise
                self.cache.reserve(item.sha256, item.size, self.pinned())
                continue
            self.counters["items_completed"] += 1
            self.failed.pop(item.sha256, None)
            log.info("learning_item_cached", sha256=item.sha256, course=job.course, size=item.size,
                     took_s=round(time.monotonic() - job.started, 3))
            return

    def _chunk_len(self, job: Job, index: int) -> int:
        return min(job.chunk_size, job.item.size - index * job.chunk_size)

    def _wait_turn(self) -> bool:
        """Wait for a connected link and no security events waiting; False when stopping."""
        while not self._stop.is_set():
            if self.link.connected and self.may_proceed():
                self.paused = False
                return True
            self.paused = self.link.connected
            self._stop.wait(_POLL_S)
        return False

    def _fetch(self, job: Job, index: int) -> bytes | None:
        want = job.item.chunks[index]
        req = protocol.ChunkRequest(job.item.sha256, index, want)
        attempts, problem = 0, ""
        while self._wait_turn() and self.bucket.take(self._chunk_len(job, index), self._stop):
            if attempts:
                if not self._retry(job, index, attempts, problem):
                    return None
            attempts += 1
            reply = self._request(req)
            if reply is None:
                self.counters["chunk_timeouts"] += 1
                problem = "no answer in time"
                continue
            if reply.status != "ok":
                raise EdgeError(f"content server refused chunk {index} of {job.item.sha256[:12]}…: "
                                f"{reply.status} {reply.error}")
            self.counters["chunks_fetched"] += 1
            self.counters["bytes_fetched"] += len(reply.payload)
            if hashlib.sha256(reply.payload).hexdigest() != want:
                self.counters["chunks_corrupt"] += 1
                log.warning("learning_chunk_corrupt", sha256=job.item.sha256, index=index)
                problem = "its sha256 does not match the catalog"
                continue
            return reply.payload
        return None

    def _retry(self, job: Job, index: int, attempts: int, problem: str) -> bool:
        """Spend one retry of the chunk's and the item's budget, pause; False when stopping."""
        job.attempts += 1
        where = f"chunk {index} of {job.item.sha256[:12]}…"
        if attempts >= CHUNK_ATTEMPTS:
            raise TransferFailed(f"{where}: {attempts} attempts, each failed ({problem}); item failed")
        if job.attempts > ITEM_RETRIES:
            raise TransferFailed(f"{where}: the item used its {ITEM_RETRIES} retries (last: {problem}); item failed")
        return not self._stop.wait(min(RETRY_PAUSE_S * 2 ** (attempts - 1), RETRY_PAUSE_MAX_S))

    def _request(self, req: protocol.ChunkRequest) -> _Pending | None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        correlation = os.urandom(12)
        pending = _Pending()
        self._pending[correlation] = pending
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = protocol.response_topic(self.site, self.device)
        props.CorrelationData = correlation
        try:
            self.link.publish(protocol.request_topic(self.site, self.device), req.encode(),
                              qos=1, properties=props)
            got = pending.event.wait(self.timeout)
        except EdgeError as exc:  # link dropped between the check and the publish
            log.info("learning_request_not_sent", error=str(exc))
            got = False
        finally:
            self._pending.pop(correlation, None)
        return pending if got else None

    def _on_response(self, topic: str, payload: bytes, props) -> None:
        """paho's network thread: hand the bytes to the waiting worker, never block."""
        correlation = getattr(props, "CorrelationData", None)
        pending = self._pending.get(bytes(correlation)) if correlation else None
        if pending is None:
            return  # a late answer to a request that timed out
        user = dict(getattr(props, "UserProperty", []) or [])
        pending.status, pending.error = user.get("status", "ok"), user.get("error", "")
        pending.payload = bytes(payload)
        pending.event.set()
