"""The reference content server: a folder becomes a signed catalog and answers chunk requests.

Folder layout: one sub-folder per course (its name is the course id), the
files inside are its items. Optional ``COURSE/course.json`` gives
``{"title": ..., "version": n}``; optional ``assignments.json`` at the top is
a list of ``{"course": id, "device": name}`` or ``{"course": id, "resident": pseudonym}``.

Used by ``edge content-serve``, the tests, the demo and small sites. Requests
are answered on a small worker pool, never on paho's network thread.
"""

from __future__ import annotations

import json
import mimetypes
import queue
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from edge import signing
from edge.errors import EdgeError
from services.learning import protocol

log = structlog.get_logger("edge.learning.server")
DEFAULT_CHUNK = 256 * 1024


def scan_folder(folder: Path, chunk_size: int) -> tuple[list[dict], dict[str, tuple[Path, list[str]]]]:
    """(courses for the catalog, sha256 -> (path, chunk hashes)) from a content folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeError(f"{folder} is not a folder; expected one sub-folder per course")
    courses, index = [], {}
    for course_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        meta_path = course_dir / "course.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        items = []
        for path in sorted(p for p in course_dir.iterdir() if p.is_file() and p.name != "course.json"):
            with open(path, "rb") as f:
                sha, chunks, size = protocol.chunk_hashes(f, chunk_size)
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            items.append({"sha256": sha, "size": size, "media_type": media, "name": path.name,
                          "chunks": chunks})
            index[sha] = (path, chunks)
        courses.append({"id": course_dir.name, "title": meta.get("title", course_dir.name),
                        "version": int(meta.get("version", 1)), "items": items})
    return courses, index


def _folder_version(folder: Path) -> int:
    """Seconds of the newest change in the folder: stable across restarts, grows with edits."""
    return max([int(p.stat().st_mtime) for p in Path(folder).rglob("*")] + [1])


class ContentServer:
    """Publishes the signed catalog (retained) and serves chunks over MQTT 5 request/response."""

    def __init__(self, link, folder: Path, site: str, key, *, chunk_size: int = DEFAULT_CHUNK,
                 workers: int = 4):
        self.link, self.folder, self.site, self.key = link, Path(folder), site, key
        self.chunk_size, self.workers = chunk_size, workers
        self.index: dict[str, tuple[Path, list[str]]] = {}
        self.catalog: dict[str, Any] | None = None
        self.served: Counter[tuple[str, int]] = Counter()
        self._corrupt_next: set[tuple[str, int]] = set()
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def build_catalog(self, version: int | None = None, assignments: list[dict] | None = None) -> dict:
        courses, index = scan_folder(self.folder, self.chunk_size)
        if assignments is None:
            path = self.folder / "assignments.json"
            assignments = json.loads(path.read_text()) if path.exists() else []
        doc = {"type": "learning.catalog", "site": self.site,
               "version": version or _folder_version(self.folder),
               "issued_at": datetime.now(UTC).isoformat(),
               "expires_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(), "chunk_size": self.chunk_size,
               "courses": courses, "assignments": assignments}
        with self._lock:
            self.index = index
        return signing.sign(doc, self.key)

    def publish_catalog(self, version: int | None = None, assignments: list[dict] | None = None) -> dict:
        self.catalog = self.build_catalog(version, assignments)
        self.link.publish(protocol.catalog_topic(self.site), json.dumps(self.catalog).encode(),
                          qos=1, retain=True)
        log.info("content_catalog_published", version=self.catalog["version"],
                 courses=len(self.catalog["courses"]), items=len(self.index))
        return self.catalog

    def start(self) -> ContentServer:
        self.link.subscribe(protocol.request_filter(self.site), self._on_request, qos=1)
        for n in range(self.workers):
            t = threading.Thread(target=self._work, name=f"content-serve-{n}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=5)

    def inject_corruption(self, sha: str, index: int) -> None:
        """Fault injection for tests: the next answer for this chunk has one byte flipped."""
        with self._lock:
            self._corrupt_next.add((sha, index))

    def _on_request(self, topic: str, payload: bytes, props) -> None:
        self._queue.put((topic, bytes(payload), props))

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            self._answer(*job)

    def _answer(self, topic: str, payload: bytes, props) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        reply_to = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        if not reply_to or correlation is None:
            log.warning("content_request_without_response_topic", topic=topic)
            return
        out = Properties(PacketTypes.PUBLISH)
        out.CorrelationData = correlation
        try:
            data = self._read_chunk(protocol.ChunkRequest.decode(payload))
            out.UserProperty = [("status", "ok")]
        except protocol.ProtocolError as exc:
            data, out.UserProperty = b"", [("status", "bad_request"), ("error", str(exc))]
        except LookupError as exc:
            data, out.UserProperty = b"", [("status", "not_found"), ("error", str(exc.args[0]))]
        try:
            self.link.publish(reply_to, data, qos=1, properties=out)
        except EdgeError as exc:
            log.warning("content_reply_not_sent", error=str(exc))

    def _read_chunk(self, req: protocol.ChunkRequest) -> bytes:
        with self._lock:
            entry = self.index.get(req.item)
            corrupt = (req.item, req.index) in self._corrupt_next
            self._corrupt_next.discard((req.item, req.index))
        if entry is None:
            raise LookupError(f"no item {req.item} in the current catalog")
        path, chunks = entry
        if req.index >= len(chunks) or chunks[req.index] != req.chunk:
            raise LookupError(f"item {req.item} has no chunk {req.index} with hash {req.chunk}")
        with open(path, "rb") as f:
            f.seek(req.index * self.chunk_size)
            data = f.read(self.chunk_size)
        with self._lock:
            self.served[(req.item, req.index)] += 1
        if corrupt and data:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data
