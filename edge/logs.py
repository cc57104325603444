"""Structured logging: JSON lines for journald, readable text on a terminal.

Every event dict passes ``redact`` before it is rendered, so secrets and
biometric data never reach a log, whatever key or nesting they arrive under.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

REDACTED = "[redacted]"
# Keys whose values are secret or biometric, wherever they appear.
_SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?(?![a-z])|secret|token|api_?key|private_?key|(^|_)key(_|$)|credential"
    r"|template|encoding|embedding|biometric|face_?vector|descriptor|authorization|cookie)",
    re.IGNORECASE,
)
# Keys that merely name a file or a count of secrets are safe to show.
_SAFE_KEY = re.compile(r"(_file|_path|_count|_id|_ids|_fingerprint|_version|_kind|_name)$", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
# Secrets inside free text (exception messages, URLs): "password=x", "token: x", "//user:x@".
_INLINE = re.compile(r"(?i)\b(pass(?:word|wd|phrase)?|secret|token|api_?key)(\s*[=:]\s*)[^\s,;&\"']+")
_URL_CREDENTIALS = re.compile(r"(//[^/\s:@]+:)[^/\s@]+@")
_VECTOR_LEN = 64  # a float list this long is treated as a biometric template
_MAX_DEPTH = 8  # deeper than this, nothing is shown: a secret must not hide below the limit


def _is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not _SAFE_KEY.search(key)


def _looks_like_template(value: Any) -> bool:
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy arrays, without importing numpy
        return True
    return (isinstance(value, list | tuple) and len(value) >= _VECTOR_LEN
            and all(_is_float(v) for v in value[:_VECTOR_LEN]))


def _is_float(value: Any) -> bool:
    # numpy's float32 is not a Python float; recognise it by name without importing numpy.
    return isinstance(value, float) or type(value).__name__.startswith("float")


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        return "[too deep to log]"
    if hasattr(value, "model_dump") and not isinstance(value, type):  # pydantic models
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: (REDACTED if _is_secret_key(k) else _scrub(v, depth + 1)) for k, v in value.items()}
    if _looks_like_template(value):
        return REDACTED
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v, depth + 1) for v in value)
    if isinstance(value, bytes | bytearray | memoryview) and len(value) >= 32:
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        if "PRIVATE KEY" in value:
            value = _PEM.sub(REDACTED, value)
        value = _INLINE.sub(rf"\1\2{REDACTED}", value)
        return _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", value)
    return value


def redact(_logger, _method: str, event_dict: dict) -> dict:
    """structlog processor: replace secrets and biometric data anywhere in the event dict."""
    return _scrub(event_dict)


def configure(level: str = "info", fmt: str = "auto", stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                else structlog.processors.JSONRenderer(sort_keys=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


class _CurrentStderr:
    """Whatever sys.stderr is when a line is logged (click's test runner swaps it per command)."""

    def write(self, text: str) -> None:
        sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_for_tools():
    """For CLI tools (every command but ``edge run``): stdout carries the answer, with ``--json``
    nothing but the JSON, so library log lines go to stderr, warnings and up. Returns a function
    that puts the previous configuration back."""
    before = structlog.get_config()
    configure("warning", "console", stream=_CurrentStderr())
    return lambda: structlog.configure(**before)


def set_level(level: str) -> None:
    """Change the level at run time (the set-log-level command)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())))
