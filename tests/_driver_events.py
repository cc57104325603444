"""What a driver emits, collected in order for a test: the driver runs without a daemon.

Every payload is checked against the published contract as it is emitted, and a test waits
for events on a condition (never a sleep). The lane helpers of each driver family use it.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace


class EventRecorder:
    """``emit`` is the driver context's emit; ``of`` and ``wait`` read what it recorded."""

    def __init__(self, payloads: dict) -> None:
        self.payloads = payloads  # event type -> pydantic payload model
        self.events: list[dict] = []
        self._cond = threading.Condition()

    def _emit(self, type, payload, priority, source):
        self.payloads[type].model_validate(payload)  # the published contract holds for every event
        with self._cond:
            event = {"type": type, "payload": payload, "priority": priority}
            self.events.append(event)
            self._cond.notify_all()
            return SimpleNamespace(id=f"ev-{len(self.events)}", seq=len(self.events), **event)

    def of(self, type: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["type"] == type]

    def wait(self, type: str, count: int = 1, timeout: float = 10.0, **match) -> list[dict]:
        """The first ``count`` events of ``type`` whose payload matches ``match``."""
        def found():
            return [e for e in self.events if e["type"] == type
                    and all(e["payload"].get(k) == v for k, v in match.items())]
        with self._cond:
            ok = self._cond.wait_for(lambda: len(found()) >= count, timeout)
            assert ok, f"no {count}x {type} {match} within {timeout}s; got {[e['type'] for e in self.events]}"
            return found()[:count]
