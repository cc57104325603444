"""Structured logging: JSON lines for journald, readable text on a terminal.

Every event dict passes ``redact`` before it is rendered, so secrets and
biometric data never reach a log, whatever key or nesting they arrive under.
One list (``SECRET_WORDS``) names what is secret: a value under such a key is
dropped at any depth, including inside a string that holds JSON; free text
loses ``word=value`` and ``"word": "value"`` forms; and a long base64 run (a
template, a key, a sealed blob) is replaced by its length.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any


def _import_structlog_lean() -> None:
    """Import structlog without rich, before anything else does.

    structlog imports rich when it is installed, for pretty tracebacks this daemon never
    prints (it logs JSON lines). Devices do not install rich; a development environment does
    (import-linter needs it), and there it would cost the daemon 66 modules and 3.6 MB, and
    every CLI command about 15 ms, so the figures measured there would not be a device's.
    While structlog loads, rich reads as absent; any other importer then gets the real module.
    """
    if not {"structlog", "rich"}.isdisjoint(sys.modules):
        return  # too late, or already paid for
    sys.modules["rich"] = None  # "import rich" raises ImportError, as where it is not installed
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_lean()
import structlog  # noqa: E402  (after the lean import above)

REDACTED = "[redacted]"
#: The one list of what is secret: a key containing one of these (as a word, ``_``-separated)
#: has its value dropped wherever it appears. Extend it here, nowhere else.
SECRET_WORDS = ("pin", "psk", "passcode", "otp", "password", "passwd", "passphrase", "pass", "secret",
                "token", "key", "apikey", "credential", "credentials", "salt", "verifier", "template",
                "templates", "encoding", "embedding", "biometric", "descriptor", "authorization", "cookie",
                "bearer")
_WORDS = "|".join(sorted(SECRET_WORDS, key=len, reverse=True))
_WORD_SET = frozenset(SECRET_WORDS)
# Secret words run into others (``password``, ``face_vector``, ``privatekey``, ``client_secret``).
_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase|code)|secret|token|api_?key|private_?key|credential|template|encoding|embedding"
    r"|biometric|face_?vector|descriptor|authorization|cookie",
    re.IGNORECASE,
)
_KEY_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")
# Keys that merely name a file or a count of secrets are safe to show.
_SAFE_KEY = re.compile(r"(_file|_path|_count|_id|_ids|_fingerprint|_version|_kind|_name)$", re.IGNORECASE)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
# Secrets inside free text (exception messages, URLs, JSON fragments): "password=x", "token: x",
# '"pin": "1234"', "//user:x@".
# Only keys holding a secret word are candidates (``_inline`` then applies the key rules), so that
# "refused: pin=1234" is read as the key pin, not as the value of "refused".
_INLINE = re.compile(rf"""(?i)(?<![A-Za-z0-9_-])([a-z0-9_-]{{0,40}}?(?:{_WORDS}|pass(?:word|wd|phrase)|api_?key)"""
                     r"""[a-z0-9_-]{0,40})(\\*["']?\s*[=:]\s*\\*["']?)([^\s,;&"'}\]\\=]+)""")
# A base64 run this long with upper case, lower case and digits is a key, a template or a sealed
# blob, not prose or a path (hex hashes, all lower case, stay readable).
_B64 = re.compile(r"[A-Za-z0-9+/_-]{48,}={0,2}")
_MAX_JSON_TEXT = 1 << 20
_URL_CREDENTIALS = re.compile(r"(//[^/\s:@]+:)[^/\s@]+@")
_VECTOR_LEN = 64  # a float list this long is treated as a biometric template
_MAX_DEPTH = 8  # deeper than this, nothing is shown: a secret must not hide below the limit


def _is_secret_key(key: Any) -> bool:
    """A secret word as a whole word of the key (``pin``, ``user_pin``, ``apiKey``, ``otp-code``),
    or run into another; unless the key only names a file, a count or an id."""
    if not isinstance(key, str) or _SAFE_KEY.search(key):
        return False
    words = {w.lower().removesuffix("s") if len(w) > 4 else w.lower() for w in _KEY_SPLIT.split(key) if w}
    return bool(words & _WORD_SET) or bool(_SECRET_KEY.search(key))


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
        return _scrub_text(value, depth)
    return value


def _scrub_text(value: str, depth: int) -> str:
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and len(stripped) < _MAX_JSON_TEXT:
        try:  # a JSON document logged as a string: scrub it as data, then write it back
            return json.dumps(_scrub(json.loads(stripped), depth + 1), separators=(",", ":"))
        except (ValueError, RecursionError):
            pass
    if "PRIVATE KEY" in value:
        value = _PEM.sub(REDACTED, value)
    value = _B64.sub(_blob, value)  # first: a long blob is one token, not thousands of start points
    value = _INLINE.sub(_inline, value)
    return _URL_CREDENTIALS.sub(rf"\1{REDACTED}@", value)


def _inline(match: re.Match) -> str:
    """``key=value`` / ``"key": "value"`` in text: the value goes when the key is a secret's."""
    key, sep, _value = match.groups()
    return f"{key}{sep}{REDACTED}" if _is_secret_key(key) else match.group(0)


def _blob(match: re.Match) -> str:
    run = match.group(0)
    if any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run):
        return f"[{len(run)} chars of base64]"
    return run


def scrubbed(value: Any) -> Any:
    """``value`` as a log would show it: secrets and biometric data replaced (a copy)."""
    return _scrub(value)


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
