"""Acknowledgements the store could not record yet (a full disk), kept in memory.

The broker has the events; only our note of it is missing. Forgetting the acks
would make the uplink send every one of those events again once it rewinds (the
issue saw 10 491 re-sent after a manual drain); so they are kept here as seq
ranges, the uplink skips them when it reads the outbox, and the acker writes
them as soon as the store takes writes again. Bounded: beyond ``MAX_SEQS`` the
oldest are forgotten, which costs duplicates (central de-duplicates), never loss.
"""

from __future__ import annotations

import bisect

MAX_SEQS = 2_000_000


class SeqRanges:
    """A bounded set of seqs as sorted, disjoint ``[lo, hi]`` ranges; not thread-safe."""

    def __init__(self, max_seqs: int = MAX_SEQS):
        self.max_seqs = max_seqs
        self._los: list[int] = []
        self._his: list[int] = []
        self.count = 0
        self.forgotten = 0

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, seqs: list[int]) -> None:
        for lo, hi in _runs(sorted(set(seqs))):
            self._add(lo, hi)
        while self.count > self.max_seqs:
            lo, hi = self._los.pop(0), self._his.pop(0)
            self.count -= hi - lo + 1
            self.forgotten += hi - lo + 1

    def _add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self._his, lo - 1)  # first range that may touch [lo, hi]
        j = i
        while j < len(self._los) and self._los[j] <= hi + 1:
            lo, hi = min(lo, self._los[j]), max(hi, self._his[j])
            self.count -= self._his[j] - self._los[j] + 1
            j += 1
        self._los[i:j], self._his[i:j] = [lo], [hi]
        self.count += hi - lo + 1

    def __contains__(self, seq: int) -> bool:
        i = bisect.bisect_left(self._his, seq)
        return i < len(self._los) and self._los[i] <= seq

    def take(self) -> list[int]:
        """Every seq, emptying the set (the caller adds back what it could not write)."""
        out = [s for lo, hi in zip(self._los, self._his, strict=True) for s in range(lo, hi + 1)]
        self._los, self._his, self.count = [], [], 0
        return out


def _runs(sorted_seqs: list[int]):
    if not sorted_seqs:
        return
    lo = prev = sorted_seqs[0]
    for seq in sorted_seqs[1:]:
        if seq != prev + 1:
            yield lo, prev
            lo = seq
        prev = seq
    yield lo, prev
