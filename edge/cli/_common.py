"""What every command shares: --json, loading the config, printing, failing clearly."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

EX_OK, EX_FAIL, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 2, 69, 78


def json_option(fn: Callable) -> Callable:
    """Adds ``--json``: machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def settings_from(ctx: click.Context, *, check_drivers: bool = False):
    """Load the config named by --config; on error print each problem and exit 78."""
    from edge.config import load_settings
    from edge.errors import ConfigError

    try:
        return load_settings(ctx.find_root().obj.get("config_path"), check_drivers=check_drivers)
    except ConfigError as exc:
        for line in exc.lines:
            click.echo(f"config error: {line}", err=True)
        sys.exit(EX_CONFIG)


class LightSettings:
    """The four keys ``edge status`` and ``edge events tail`` need, read without pydantic.

    Importing pydantic(-settings) costs more than the 0.3 s these commands may take
    on a slow device. Whenever the file does not plainly give usable values, the
    full validation runs instead, so a broken config still gets its usual errors.
    """

    __slots__ = ("device_id", "site", "role", "state_dir")


def light_settings(ctx: click.Context):
    """``device_id``, ``site``, ``role`` and ``state_dir`` from the TOML file and EDGE_ variables."""
    import os
    import tomllib
    from pathlib import Path

    path = ctx.find_root().obj.get("config_path") or os.environ.get("EDGE_CONFIG") or "/etc/edge/edge.toml"
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, ValueError):
        return settings_from(ctx)
    env = {k.upper(): v for k, v in os.environ.items() if k.upper().startswith("EDGE_")}
    light = LightSettings()
    for key, default in (("device_id", None), ("site", None), ("role", None), ("state_dir", "/var/lib/edge")):
        value = env.get(f"EDGE_{key.upper()}", data.get(key, default))
        if not isinstance(value, str) or not value:
            return settings_from(ctx)
        setattr(light, key, value)
    if light.role not in ("gate", "tablet"):
        return settings_from(ctx)
    light.state_dir = Path(light.state_dir)
    return light


def output(data: Any, as_json: bool, text: Callable[[Any], str] | str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=None, default=str))
    else:
        click.echo(text(data) if callable(text) else text)


def fail(message: str, code: int = EX_FAIL, *, as_json: bool = False, **extra: Any) -> None:
    """One line saying what went wrong (and what to do), then a meaningful exit code."""
    if as_json:
        click.echo(json.dumps({"ok": False, "error": message, **extra}, default=str))
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(code)


def edge_errors(fn: Callable) -> Callable:
    """Turn our own errors into a one-line message and exit 1 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        from edge.errors import EdgeError

        try:
            return fn(*args, **kwargs)
        except EdgeError as exc:
            fail(str(exc), as_json=kwargs.get("as_json", False))

    return wrapper


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
