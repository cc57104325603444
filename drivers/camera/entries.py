"""Entry templates of visitors inside: the face captured at entry, kept for the exit check only.

They live in the face worker's memory and nowhere else (no file, no event,
no pipe message carries one): a crash or a restart destroys them, which
leaves the exit to an officer (``no_entry_template``), never to a weaker check.
The gate destroys a visitor's template when they have left, and all of them
at the end of the visiting session; a forgotten template is overwritten first.
"""

from __future__ import annotations

import numpy as np


class EntryTemplates:
    def __init__(self, limit: int = 5000):
        self._by_key: dict[str, np.ndarray] = {}
        self._limit = limit

    def keep(self, key: str, encoding) -> None:
        if key not in self._by_key and len(self._by_key) >= self._limit:
            self.forget(next(iter(self._by_key)))  # the oldest; the session end would have cleared it
        self._by_key[key] = np.array(encoding, dtype=np.float64, copy=True)

    def distance(self, key: str, encoding) -> float | None:
        template = self._by_key.get(key)
        if template is None:
            return None
        return float(np.linalg.norm(template - np.asarray(encoding, dtype=np.float64)))

    def forget(self, key: str) -> bool:
        template = self._by_key.pop(key, None)
        if template is None:
            return False
        template.fill(0.0)
        return True

    def forget_all(self) -> int:
        keys = list(self._by_key)
        for key in keys:
            self.forget(key)
        return len(keys)

    def __len__(self) -> int:
        return len(self._by_key)
