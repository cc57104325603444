"""Entry templates of visitors inside: the face captured at entry, kept for the exit check only.

They live in the face worker's memory and nowhere else (no file, no event,
no pipe message carries one): a crash or a restart destroys them, which
leaves the exit to an officer (``no_entry_template``), never to a weaker check.
The gate destroys a visitor's template when they have left, and all of them
at the end of the visiting session; a forgotten template is overwritten first.
Until then a booking's entry face stays the one first kept: a later entry on
the same booking must be the same subject with the same face.
"""

from __future__ import annotations

import numpy as np


class EntryTemplates:
    """Key (the booking) -> the subject verified at entry and their face. A booking's entry face,
    once kept, is never replaced while it is kept: not by another subject's face (another
    person walking in on it, to walk out on it later), not by a different face."""

    def __init__(self, limit: int = 5000):
        self._by_key: dict[str, tuple[str, np.ndarray]] = {}
        self._limit = limit

    def keep(self, key: str, subject_id: str, encoding, threshold: float) -> str | None:
        """Keep the face verified at entry; None when kept (or this face is already kept for this
        subject), otherwise why not: ``entry_face_of_another_subject`` or ``not_the_entry_face``."""
        held = self._by_key.get(key)
        if held is not None:
            if held[0] != subject_id:
                return "entry_face_of_another_subject"
            distance = self.distance(key, encoding)
            return None if distance is not None and distance <= threshold else "not_the_entry_face"
        if len(self._by_key) >= self._limit:
            self.forget(next(iter(self._by_key)))  # the oldest; the session end would have cleared it
        self._by_key[key] = (subject_id, np.array(encoding, dtype=np.float64, copy=True))
        return None

    def distance(self, key: str, encoding) -> float | None:
        held = self._by_key.get(key)
        if held is None:
            return None
        return float(np.linalg.norm(held[1] - np.asarray(encoding, dtype=np.float64)))

    def forget(self, key: str) -> bool:
        held = self._by_key.pop(key, None)
        if held is None:
            return False
        held[1].fill(0.0)
        return True

    def forget_all(self) -> int:
        keys = list(self._by_key)
        for key in keys:
            self.forget(key)
        return len(keys)

    def __len__(self) -> int:
        return len(self._by_key)
