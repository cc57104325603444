"""A high-water mark for ``seq`` kept outside the database.

If the database is lost to corruption, the fresh one continues above every seq
ever handed out, so central never sees a seq reused. Seqs are reserved in
blocks so the file is written (and fsync'd) rarely.
"""

from __future__ import annotations

from pathlib import Path

from edge._fs import atomic_write

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
        atomic_write(self.path, f"{self.limit}\n".encode())
