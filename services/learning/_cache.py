"""Content-addressed files under state_dir with a byte quota.

Layout: ``objects/<sha256>`` holds verified items; ``partial/<sha256>.part``
holds an item being downloaded, chunks written at their offsets. The file
system is the index (nothing to get out of step after kill -9): sizes come
from ``stat``, least-recently-used order from the mtime, which a read bumps.

Resume needs no journal: on restart every chunk-sized region of a partial
file is hashed against the catalog's chunk hashes and the ones that match are
kept, so only chunks that were in flight are fetched again. An item becomes
an object only after its whole sha256 matches, with fsync and rename.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from edge._fs import fsync_dir
from edge.errors import EdgeError
from edge.schema import SHA256_HEX

log = structlog.get_logger("edge.learning.cache")
_HEX64 = re.compile(SHA256_HEX)
_BLOCK = 1024 * 1024
_TOUCH_EVERY_S = 60.0


class CorruptContent(EdgeError):
    """A cached or downloaded item does not match its sha256; it has been removed."""


class QuotaExceeded(EdgeError):
    """The item does not fit in the cache quota even after evicting every unpinned item."""


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()




class ContentCache:
    """Verified content by sha256, evicting unpinned items least-recently-used to stay in quota."""

    def __init__(self, root: Path, quota_bytes: int):
        self.objects = Path(root) / "objects"
        self.partial = Path(root) / "partial"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.quota = quota_bytes
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._verified: set[str] = set()  # hashed since this process started
        self._touched: dict[str, float] = {}
        self.evicted_total = 0
        self.corrupt_total = 0
        for path in self.objects.iterdir():
            if _HEX64.fullmatch(path.name):
                self._sizes[path.name] = path.stat().st_size
            else:  # a temp file left by a crash mid-commit
                path.unlink(missing_ok=True)

    # -- queries --------------------------------------------------------------

    def has(self, sha: str) -> bool:
        return sha in self._sizes

    def path(self, sha: str) -> Path:
        return self.objects / sha

    def hashes(self) -> list[str]:
        with self._lock:
            return list(self._sizes)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def bytes_of(self, hashes: Iterable[str]) -> int:
        with self._lock:
            return sum(self._sizes.get(h, 0) for h in hashes)

    # -- reading --------------------------------------------------------------

    def open_for_read(self, sha: str) -> Path:
        """Path of a cached item, hashed once per process before it is served; bumps LRU."""
        path = self.path(sha)
        if sha not in self._sizes:
            raise FileNotFoundError(sha)
        if sha not in self._verified:
            if sha256_file(path) != sha:
                self._corrupt(sha)
            self._verified.add(sha)
        now = time.time()
        if now - self._touched.get(sha, 0) > _TOUCH_EVERY_S:
            os.utime(path, (now, now))
            self._touched[sha] = now
        return path

    def _corrupt(self, sha: str) -> None:
        self.remove(sha)
        self.corrupt_total += 1
        log.error("learning_cached_item_corrupt", sha256=sha)
        raise CorruptContent(f"cached item {sha[:12]}… did not match its sha256; removed, will be fetched again")

    def scrub(self, budget_bytes: int, start_after: str = "") -> tuple[list[str], str]:
        """Re-hash cached items up to ``budget_bytes``; returns (corrupt hashes, where to resume)."""
        corrupt: list[str] = []
        spent, last = 0, start_after
        for sha in sorted(h for h in self.hashes() if h > start_after):
            if spent >= budget_bytes:
                break
            try:
                ok = sha256_file(self.path(sha)) == sha
            except FileNotFoundError:
                continue
            spent += self._sizes.get(sha, 0)
            last = sha
            if not ok:
                self.remove(sha)
                self.corrupt_total += 1
                corrupt.append(sha)
                log.error("learning_cached_item_corrupt", sha256=sha, found_by="scrub")
            else:
                self._verified.add(sha)
        return corrupt, ("" if spent < budget_bytes else last)

    # -- writing --------------------------------------------------------------

    def reserve(self, sha: str, size: int, pinned: set[str]) -> None:
        """Make room for ``size`` bytes, evicting unpinned items oldest-read first."""
        with self._lock:
            self._reserved.pop(sha, None)
            need = sum(self._sizes.values()) + sum(self._reserved.values()) + size - self.quota
            if need > 0:
                victims = sorted((h for h in self._sizes if h not in pinned),
                                 key=lambda h: self._mtime(h))
                freeable = sum(self._sizes[h] for h in victims)
                if freeable < need:
                    raise QuotaExceeded(
                        f"item of {size} bytes does not fit in the {self.quota}-byte quota "
                        f"(pinned content fills it); raise learning.quota_bytes")
                for victim in victims:
                    if need <= 0:
                        break
                    need -= self._sizes[victim]
                    self._unlink(victim)
                    self.evicted_total += 1
                    log.info("learning_item_evicted", sha256=victim)
            self._reserved[sha] = size

    def release(self, sha: str) -> None:
        with self._lock:
            self._reserved.pop(sha, None)

    def _mtime(self, sha: str) -> float:
        try:
            return self.path(sha).stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def part_path(self, sha: str) -> Path:
        return self.partial / f"{sha}.part"

    def resume_state(self, sha: str, chunk_hashes: list[str], chunk_size: int) -> set[int]:
        """Indexes of chunks already present and correct in the partial file."""
        path = self.part_path(sha)
        if not path.exists():
            return set()
        good: set[int] = set()
        with open(path, "rb") as f:
            for index, want in enumerate(chunk_hashes):
                f.seek(index * chunk_size)
                data = f.read(chunk_size)
                if data and hashlib.sha256(data).hexdigest() == want:
                    good.add(index)
        return good

    def write_chunk(self, sha: str, index: int, chunk_size: int, data: bytes) -> None:
        """Write a verified chunk at its offset (no fsync: resume re-hashes what is there)."""
        fd = os.open(self.part_path(sha), os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            os.pwrite(fd, data, index * chunk_size)
        finally:
            os.close(fd)

    def commit(self, sha: str, size: int) -> None:
        """Verify the whole partial file, then make it an object atomically."""
        part = self.part_path(sha)
        with open(part, "rb+") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())
        if sha256_file(part) != sha:
            part.unlink(missing_ok=True)
            self.release(sha)
            self.corrupt_total += 1
            raise CorruptContent(f"downloaded item {sha[:12]}… did not match its sha256; fetching it again")
        os.replace(part, self.path(sha))
        fsync_dir(self.objects)
        with self._lock:
            self._reserved.pop(sha, None)
            self._sizes[sha] = size
            self._verified.add(sha)

    def remove(self, sha: str) -> None:
        with self._lock:
            self._unlink(sha)

    def _unlink(self, sha: str) -> None:
        self.path(sha).unlink(missing_ok=True)
        self._sizes.pop(sha, None)
        self._verified.discard(sha)

    def drop_partials(self, keep: set[str]) -> None:
        """Delete partial files of items no catalog wants any more."""
        for path in self.partial.glob("*.part"):
            if path.name.removesuffix(".part") not in keep:
                path.unlink(missing_ok=True)
