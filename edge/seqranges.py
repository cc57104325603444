"""Sets of seqs kept as sorted ``[lo, hi]`` ranges: seqs come in runs.

Used for acknowledgements the store could not record yet (a full disk): the
broker has the events, only our note of it is missing, and forgetting it would
make the uplink send them all again. Bounded: beyond ``max_seqs`` the oldest are
forgotten, which costs duplicates (central de-duplicates), never loss. Also
``merge`` for the exact seq ranges of a drop report.
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
        self.add_ranges(runs(sorted(set(seqs))))

    def add_ranges(self, ranges) -> None:
        for lo, hi in ranges:
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

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def clear(self) -> None:
        self._los, self._his, self.count = [], [], 0


def merge(ranges: tuple, seqs: list[int]) -> tuple:
    """``ranges`` ((lo, hi) pairs, sorted) with ``seqs`` added, as a new sorted, merged tuple."""
    return tuple(union([*ranges, *runs(sorted(set(seqs)))]))


def union(ranges) -> list[tuple[int, int]]:
    """(lo, hi) ranges in any order, overlapping or touching: sorted, disjoint, merged."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def runs(sorted_seqs: list[int]):
    """(lo, hi) of each run of consecutive seqs in a sorted list."""
    if not sorted_seqs:
        return
    lo = prev = sorted_seqs[0]
    for seq in sorted_seqs[1:]:
        if seq != prev + 1:
            yield lo, prev
            lo = seq
        prev = seq
    yield lo, prev
