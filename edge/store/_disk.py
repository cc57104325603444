"""The store's view of its disk: how much it may still write, and a reserve for alarms.

``store.max_bytes`` alone is a promise the disk may not keep: another file can fill
the file system first, and every commit then fails with "database or disk is full".
The effective cap is therefore the smaller of ``max_bytes`` and what the store can
still write: the pages free inside the database, plus the file system's free space
(``statvfs``) beyond a margin, which is room for the write-ahead log to grow to its
checkpoint size and ``reserve_bytes`` kept for alarms (alarms may pass the cap). As the cap falls, the
store's usual priority rule applies: telemetry goes first, then normal events.

A file of ``reserve_bytes`` is also pre-allocated beside the database. When a commit
fails for space all the same (the disk filled faster than the cap followed), it is
released and the commit retried once, so the alarm that says so can be written.
It is allocated again once the disk has room for it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import structlog

log = structlog.get_logger("edge.store")

RESERVE_NAME = "store.reserve"
WAL_CHECKPOINT_PAGES = 1000  # SQLite's default wal_autocheckpoint
_REFRESH_S = 0.25  # statvfs at most this often, unless much was written since


def no_space(exc: BaseException) -> bool:
    """True when ``exc`` says the disk (or the quota) is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc)
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return False


class DiskRoom:
    """Effective cap and the alarm reserve file (writer thread only)."""

    def __init__(self, db_path: Path, conn: sqlite3.Connection, reserve_bytes: int):
        self.db_path, self._conn = Path(db_path), conn
        self.reserve_bytes = reserve_bytes
        self.reserve_path = self.db_path.with_name(RESERVE_NAME)
        self.page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self.wal_limit = WAL_CHECKPOINT_PAGES * self.page_size
        self.free_bytes = 0  # on the file system, at the last look
        self.limited = False  # True while the disk, not max_bytes, sets the cap
        self._cap = 0
        self._at = float("-inf")
        self._used_at = 0

    # -- the cap -------------------------------------------------------------------

    def cap(self, max_bytes: int, used: int) -> int:
        """The most ``used`` may reach now; cached for a moment, re-read when much was written."""
        if time.monotonic() - self._at < _REFRESH_S and used - self._used_at < self._slack() // 4:
            return self._cap
        return self.refresh(max_bytes, used)

    def refresh(self, max_bytes: int, used: int) -> int:
        self._at, self._used_at = time.monotonic(), used
        try:
            st = os.statvfs(self.db_path.parent)
            self.free_bytes = st.f_bavail * st.f_frsize
            freelist = self._conn.execute("PRAGMA freelist_count").fetchone()[0] * self.page_size
        except (OSError, sqlite3.Error) as exc:  # cannot tell: keep the configured cap
            log.warning("store_disk_check_failed", error=str(exc))
            self._cap, self.limited = max_bytes, False
            return self._cap
        # Pages free inside the file take new rows whatever the disk says; the disk's free
        # space only beyond the margin. Dropping rows frees pages, not disk space: a full
        # disk must not make the store drop more than the rows it writes need.
        room = max(0, self.free_bytes - self.margin()) + freelist
        self._cap = min(max_bytes, max(0, used + room))
        self.limited = self._cap < max_bytes
        self._hold_reserve()
        return self._cap

    def margin(self) -> int:
        """Bytes kept free below the cap: the WAL's growth to its checkpoint size, and the reserve."""
        try:
            wal = os.stat(f"{self.db_path}-wal").st_size
        except OSError:
            wal = 0
        return max(0, self.wal_limit - wal) + self.reserve_bytes

    def stale(self) -> None:
        """Look at the disk again before the next batch (a commit just failed for space)."""
        self._at = float("-inf")

    def _slack(self) -> int:
        return max(self._cap - self._used_at, 64 * 1024)

    # -- the reserve file ------------------------------------------------------------

    def _hold_reserve(self) -> None:
        """(Re)allocate the reserve file once the disk has plenty of room for it."""
        if not self.reserve_bytes or self.reserve_path.exists():
            return
        if self.free_bytes < 4 * self.reserve_bytes + self.margin():
            return
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            self.reserve_path.unlink(missing_ok=True)
            log.warning("store_reserve_not_allocated", path=str(self.reserve_path), error=str(exc))

    def release_reserve(self) -> bool:
        """Free the reserve for the alarms that follow; True if there was one to free."""
        try:
            self.reserve_path.unlink()
        except FileNotFoundError:
            return False
        self._at = float("-inf")  # look at the disk again before the next batch
        log.error("store_reserve_released", path=str(self.reserve_path), bytes=self.reserve_bytes)
        return True
