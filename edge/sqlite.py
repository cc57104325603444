"""One way to open the device's SQLite files, so every database gets the same durable settings.

A writable connection is in autocommit mode (``isolation_level=None``: callers
say ``BEGIN IMMEDIATE`` themselves), shared across threads under the caller's
lock, and by default in WAL mode with ``synchronous = FULL``: a commit is on
disk before the call returns, which is what lets a gate act on it. Only the
real differences between databases are parameters.
"""

from __future__ import annotations

import os
import sqlite3

__all__ = ["open_db"]


def open_db(path: str | os.PathLike, *, readonly: bool = False, wal: bool = True,
            busy_timeout: float = 5.0, secure_delete: bool = False, foreign_keys: bool = False,
            auto_vacuum: str | None = None, immutable: bool = False) -> sqlite3.Connection:
    """A connection to ``path``.

    readonly: opened ``mode=ro`` (never creates, resets or checkpoints the file);
      ``immutable`` also skips the WAL and locking (a damaged file being salvaged).
    wal: set WAL with ``synchronous = FULL`` (writable only); False leaves the file's own
      mode, for extra connections to a file its owner already set up.
    busy_timeout: seconds to wait for another connection's lock.
    secure_delete: deleted content is overwritten (personal data: templates, messages).
    foreign_keys: enforce REFERENCES clauses.
    auto_vacuum: e.g. "INCREMENTAL"; takes effect only on a new file, so it is set first.
    """
    if readonly:
        uri = f"file:{path}?mode=ro" + ("&immutable=1" if immutable else "")
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=False,
                               isolation_level=None)
    conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
    try:
        if auto_vacuum is not None:  # before WAL: once the file has its header, it no longer changes
            conn.execute(f"PRAGMA auto_vacuum = {auto_vacuum}")
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
        if secure_delete:
            conn.execute("PRAGMA secure_delete = ON")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn
