"""A per-device bound on what rejects may store, so that one device cannot fill central's disk.

A reject keeps the message that could not be stored, as evidence (up to ``--max-message-bytes``
each). Per device and per window (``--reject-window-s``, from the device's first reject in it):

1. while the device has stored fewer than ``--reject-max-count`` rejects and its payloads fit
   in ``--reject-max-bytes``, a reject is stored whole;
2. past the bytes, while still under the count, only the first ``REJECT_HEAD`` bytes of the
   payload are stored (the reason says so);
3. past the count, the reject is counted and not stored at all (no row, no log line).

So a device stores at most max-bytes + max-count x (head + reason) per window. The first time a
device goes past its budget in a window, one ``central_rejects_over_budget`` line names it;
the per-device counts are metrics. Events and states are never touched: only rejects. The
budget is per ingest process (K processes in a group: K times as much), kept in memory.

``apply`` decides for one batch without changing the budget; ``settle`` charges it once the
batch committed, so a batch that is retried or split is not charged twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from services.central._parse import Parsed, split_topic

log = structlog.get_logger("edge.central.ingest")

REJECT_HEAD = 4096                   # bytes of a payload kept when the device is over its reject bytes
REJECT_WINDOW_S = 24 * 3600          # defaults of the ingest's --reject-* options
REJECT_MAX_COUNT = 1000
REJECT_MAX_BYTES = 32 * 1024 * 1024
_MAX_DEVICES = 100_000               # windows kept in memory; past it, expired ones are forgotten


@dataclass
class _Window:
    start: float
    count: int = 0       # rows stored in this window
    bytes: int = 0       # payload bytes stored in this window
    logged: bool = False


@dataclass
class Charge:
    """What one batch's rejects will cost their devices once the batch is committed."""

    windows: dict[tuple[str, str], _Window] = field(default_factory=dict)
    truncated: dict[tuple[str, str], int] = field(default_factory=dict)
    unstored: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def unstored_total(self) -> int:
        return sum(self.unstored.values())

    @property
    def truncated_total(self) -> int:
        return sum(self.truncated.values())


def device_key(topic: str) -> tuple[str, str]:
    """(site, device) of a device topic; one shared key for anything else."""
    try:
        site, device, _rest = split_topic(topic)
    except ValueError:
        return ("", "?")  # not a device topic (none is subscribed): one shared budget
    return (site, device)


class RejectBudget:
    """Per-device reject budget of one ingest process (the writer thread calls apply/settle)."""

    def __init__(self, window_s: float = REJECT_WINDOW_S, max_count: int = REJECT_MAX_COUNT,
                 max_bytes: int = REJECT_MAX_BYTES, clock: Callable[[], float] = time.monotonic):
        self.window_s, self.max_count, self.max_bytes, self.clock = window_s, max_count, max_bytes, clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self._over: dict[tuple[str, str], dict[str, int]] = {}  # since start: per device, for metrics
        self._lock = threading.Lock()  # _over is read by the metrics thread

    def apply(self, parsed: Parsed) -> Charge:
        """Trim ``parsed.rejects`` to what their devices' budgets allow; the budget is unchanged."""
        charge, kept, now = Charge(), [], self.clock()
        for topic, reason, payload in parsed.rejects:
            key = device_key(topic)
            win = charge.windows.get(key)
            if win is None:
                known = self._windows.get(key)
                win = (_Window(known.start, known.count, known.bytes, known.logged)
                       if known is not None and now - known.start < self.window_s else _Window(now))
                charge.windows[key] = win
            if win.count >= self.max_count:
                charge.unstored[key] = charge.unstored.get(key, 0) + 1
                continue
            if win.bytes + len(payload) > self.max_bytes:
                charge.truncated[key] = charge.truncated.get(key, 0) + 1
                reason = (f"{reason} [device over its reject budget ({self.max_bytes} bytes per "
                          f"{self.window_s:g} s, --reject-max-bytes): first {min(REJECT_HEAD, len(payload))} "
                          f"of {len(payload)} bytes kept]")
                payload = payload[:REJECT_HEAD]
            win.count += 1
            win.bytes += len(payload)
            kept.append((topic, reason, payload))
        parsed.rejects = kept
        return charge

    def settle(self, charge: Charge) -> None:
        """The batch committed: charge its rejects, and name each device that went over, once a window."""
        for key, win in charge.windows.items():
            over = charge.truncated.get(key, 0) + charge.unstored.get(key, 0)
            if over:
                with self._lock:
                    n = self._over.setdefault(key, {"truncated": 0, "unstored": 0})
                    n["truncated"] += charge.truncated.get(key, 0)
                    n["unstored"] += charge.unstored.get(key, 0)
                if not win.logged:
                    win.logged = True
                    log.warning("central_rejects_over_budget", site=key[0], device=key[1],
                                window_s=self.window_s, max_count=self.max_count, max_bytes=self.max_bytes,
                                stored=win.count, stored_bytes=win.bytes,
                                reason="this device's rejects past its budget are kept with only their "
                                       f"first {REJECT_HEAD} bytes, then only counted, until its window ends")
            self._windows[key] = win
        if len(self._windows) > _MAX_DEVICES:
            now = self.clock()
            self._windows = {k: w for k, w in self._windows.items() if now - w.start < self.window_s}

    def over_budget(self) -> dict[tuple[str, str], dict[str, int]]:
        """(site, device) -> {"truncated", "unstored"}: rejects past the budget since the process started."""
        with self._lock:
            return {k: dict(v) for k, v in self._over.items()}
