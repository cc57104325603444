"""A high-water mark for ``seq`` kept outside the database.

If the database is lost to corruption, the fresh one continues above every seq
ever handed out, so central never sees a seq reused. Seqs are reserved in
blocks so the file is written (and fsync'd) rarely.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 100_000


class SeqReservation:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.limit = int(path.read_text().strip() or 0)
        except FileNotFoundError:
            self.limit = 0

    def ensure(self, next_seq: int) -> None:
        """Make sure every seq below ``next_seq`` is covered by the reservation."""
        if next_seq <= self.limit:
            return
        self.limit = next_seq + BLOCK
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(f"{self.limit}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dirfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
