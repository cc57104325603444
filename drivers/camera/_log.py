"""Log lines of the face code that runs in the worker, without structlog in the worker.

structlog (and what it imports: asyncio, logging, rich where installed) costs
the face worker 8-13 MB resident for a handful of lines. In the worker
(``set_sink``) each line goes to the driver over the protocol instead, which
logs it in the daemon's log (JSON, redacted, with the driver's name); anywhere
else (the CLI, tests) structlog is imported on the first line, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
_sink: Callable[[str, str, dict[str, Any]], None] | None = None


def set_sink(sink: Callable[[str, str, dict[str, Any]], None] | None) -> None:
    """Send every line of this process to ``sink(level, event, fields)`` (None: structlog)."""
    global _sink
    _sink = sink


class Logger:
    def __init__(self, name: str):
        self.name = name

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if _sink is not None:
            _sink(level, event, fields)
            return
        import structlog

        getattr(structlog.get_logger(self.name), level)(event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)


def get_logger(name: str) -> Logger:
    return Logger(name)
