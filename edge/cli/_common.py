"""What every command shares: --json, loading the config, printing, failing clearly."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from edge.cli._views import human_age, human_bytes  # noqa: F401  (re-exported for the commands)

EX_OK, EX_FAIL, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 2, 69, 78


class Seconds(click.FloatRange):
    """A duration option: more than 0 (or at least ``min``) and at most ``max`` seconds. FloatRange
    alone lets nan through (no comparison with it is true); sockets and datetimes refuse nan, inf, 1e308."""

    name = "seconds"

    def __init__(self, max: float, min: float = 0):
        super().__init__(min=min, max=max, min_open=min == 0)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


def json_option(fn: Callable) -> Callable:
    """Adds ``--json``: machine-readable output for scripts."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def publish_options(verb: str) -> Callable[[Callable], Callable]:
    """``--publish URI`` and the TLS files to publish a signed command with (``verb``: how the help
    starts, e.g. "Then publish it"); one set for every command that can send one."""
    def add(fn: Callable) -> Callable:
        file = click.Path(exists=True, dir_okay=False)
        for option in reversed([
                click.option("--publish", "publish_uri", help=f"{verb}: mqtt://host:port or mqtts://host:port."),
                click.option("--ca-file", type=file, help="CA for --publish over mqtts."),
                click.option("--cert-file", type=file, help="Client certificate for --publish."),
                click.option("--key-file", type=file, help="Client key for --publish.")]):
            fn = option(fn)
        return fn
    return add


def settings_from(ctx: click.Context, *, check_drivers: bool = False, check_state_dir: bool = False):
    """Load the config named by --config; on error print each problem and exit 78."""
    from edge.config import config_path, load_settings
    from edge.errors import ConfigError

    try:
        settings = load_settings(ctx.find_root().obj.get("config_path"), check_drivers=check_drivers)
        if check_state_dir:  # only where the daemon will write: not for read-only tools
            from edge.limits import check_state_dir as check

            check(settings, config_path(ctx.find_root().obj.get("config_path")))
        return settings
    except ConfigError as exc:
        if ctx.params.get("as_json"):  # scripts parse stdout: the errors as JSON there too
            click.echo(json.dumps({"ok": False, "error": str(exc), "errors": exc.lines}))
        for line in exc.lines:
            click.echo(f"config error: {line}", err=True)
        sys.exit(EX_CONFIG)


def light_settings(ctx: click.Context):
    """``device_id``, ``site``, ``role`` and ``state_dir`` without pydantic (see ``_views``);
    the full validation (exit 78 with its errors) whenever the file is not plainly usable."""
    from edge.cli._views import light_config

    return light_config(ctx.find_root().obj.get("config_path")) or settings_from(ctx)


def require_role(ctx: click.Context, settings, role: str, what: str, *, as_json: bool) -> None:
    """Fail (exit 1) when this device is not a ``role``: ``what`` exists on that kind of device only,
    and "is the daemon running?" would send the engineer after a daemon that runs fine."""
    if settings.role != role:
        from edge.config import config_path

        fail(f"this device is a {settings.role} (role in {config_path(ctx.find_root().obj.get('config_path'))}): "
             f"{what} is on a {role} only; point --config (or EDGE_CONFIG) at a {role}'s config",
             as_json=as_json)


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


def duration(seconds: float) -> str:
    """A wait in words: 45s, 5 min, 1.5 h."""
    if seconds < 120:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def held_text(reply: dict[str, Any]) -> str | None:
    """A barrier/erase request the daemon holds for a second operator, in words: what waits, the
    command the second operator runs, and until when; None when ``reply`` is no such request."""
    import time

    result = reply.get("result") or {}
    approval = result.get("approval_id")
    if reply.get("status") != "rejected" or not approval:
        return None
    valid = result.get("valid_s")
    until = (f" within {duration(valid)} (until {time.strftime('%H:%M:%S', time.localtime(time.time() + valid))})"
             if isinstance(valid, int | float) else "")
    return (f"held: {reply.get('target')} {reply.get('name')} is a {result.get('effect') or 'barrier'} command, "
            f"so it waits for a second operator; nothing has run yet (approval id {approval}).\n"
            f"  Another operator, logged in under their own account, approves it{until} with:\n"
            f"    edge cmd approve {approval}\n"
            f"  Until then `edge cmd pending` lists it; once it expires, ask again.")


def exit_if_held(reply: dict[str, Any], as_json: bool) -> None:
    """A barrier command held for a second operator is its normal outcome, not an error: say so
    (held_text; --json: ``ok: false``, ``state: held``, the approval id) and exit 1."""
    held = held_text(reply)
    if held is None:
        return
    result = reply["result"]
    output({"ok": False, "state": "held", "approval_id": result["approval_id"], "valid_s": result.get("valid_s"),
            "error": held.splitlines()[0], "result": reply}, as_json, held)
    sys.exit(EX_FAIL)


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

