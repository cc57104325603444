"""The one way tests (and the fleet and ingest harnesses) wait for something: poll a condition.

A test never sleeps "long enough": it waits until what it needs is true, up to a
deadline that only matters when something is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """Call ``condition`` until it returns something truthy and return that; AssertionError
    naming ``what`` when it is still falsy after ``timeout`` seconds (tried once more at the end)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def holds_within(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Whether ``condition`` becomes truthy within ``timeout`` seconds (for ``assert``
    with a message of the caller's own)."""
    try:
        wait_for(condition, timeout, interval=interval)
    except AssertionError:
        return False
    return True
