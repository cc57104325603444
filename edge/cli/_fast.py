"""The fast path for `edge status`, `edge events tail` and `edge run`: the same code, without click.

``main`` handles exactly the plain forms of status and tail and returns None for
anything else (help, unknown options, a config that needs full validation), which then
goes through click as usual. Errors and help therefore look the same either way. ``run``
sends plain ``edge [--config PATH] run`` to ``edge.cli._run``, which click's ``run`` calls too.
"""

from __future__ import annotations

import json
import os
import sys

from edge.cli import _views


def _parse(argv: list[str]) -> tuple[str | None, list[str]] | None:
    """(--config value, the rest) or None when the global options are anything else."""
    config = None
    while argv and argv[0].startswith("--config"):
        if argv[0] == "--config" and len(argv) > 1:
            config, argv = argv[1], argv[2:]
        elif argv[0].startswith("--config="):
            config, argv = argv[0].split("=", 1)[1], argv[1:]
        else:
            return None
    return config, argv


def _tail_options(args: list[str]) -> dict | None:
    opts = {"count": 20, "type_glob": None, "follow": False, "as_json": False}
    while args:
        arg, args = args[0], args[1:]
        if arg == "--json":
            opts["as_json"] = True
        elif arg in ("-f", "--follow"):
            opts["follow"] = True
        elif arg == "-n" and args and args[0].isdigit() and int(args[0]) <= 100_000:
            opts["count"], args = int(args[0]), args[1:]
        elif arg == "--type" and args and args[0]:  # an empty pattern: click explains
            opts["type_glob"], args = args[0], args[1:]
        else:
            return None  # anything unusual: let click parse it and explain
    return opts


def main(argv: list[str]) -> int | None:
    """Run status or events tail and return the exit code; None means 'use click'."""
    parsed = _parse(list(argv))
    if parsed is None:
        return None
    config, args = parsed
    if args in (["status"], ["status", "--json"]):
        settings = _views.light_config(config)
        if settings is None:
            return None
        report = _views.status_report(settings)
        print(json.dumps(report, default=str) if "--json" in args else _views.status_text(report))
        return _views.status_exit_code(report)
    if args[:2] == ["events", "tail"] and (opts := _tail_options(args[2:])) is not None:
        settings = _views.light_config(config)
        if settings is None or not os.access(settings.state_dir / "events.db", os.R_OK):
            return None  # click's path words the errors
        from edge.errors import StoreError

        try:
            _views.tail(settings.state_dir, write=lambda line: print(line, flush=opts["follow"]), **opts)
        except StoreError:  # a damaged store: it fails before the first line, and click's path words it
            return None
        return 0
    return None


def run(argv: list[str]) -> None:
    """Exit with the fast path's code if it handled argv; return otherwise."""
    parsed = _parse(list(argv))
    if parsed is not None and parsed[1] == ["run"]:  # the daemon as systemd starts it (edge.cli._run)
        from edge.cli import _run

        sys.exit(_run.main(parsed[0]))
    try:
        code = main(argv)
    except BrokenPipeError:  # `edge events tail | head`
        sys.stderr.close()
        code = 0
    if code is not None:
        sys.exit(code)
