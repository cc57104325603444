"""``edge run`` without click: systemd starts the daemon as ``edge --config PATH run``.

Once imported, click (and gettext, platform, inspect behind it) stays resident for the
daemon's whole life: 1.1 MB on a tablet, to read two words. ``edge.cli._fast`` sends the
plain forms here; ``edge run --help`` and anything unusual go through click (``run.py``), which
calls the same ``main``, so errors and exit codes are the same either way.
"""

from __future__ import annotations

import importlib
import sys
import types

EX_FAIL, EX_CONFIG = 1, 78


def main(config: str | None) -> int:
    """Run the daemon until SIGTERM; the exit code (78: a bad config, 1: another refusal)."""
    _import_structlog_lean()
    from edge.errors import ConfigError, EdgeError

    try:
        return _run(config)
    except ConfigError as exc:  # a refused file or trust anchor: systemd must not restart-loop on it
        for line in exc.lines:
            print(f"config error: {line}", file=sys.stderr, flush=True)
        return EX_CONFIG
    except EdgeError as exc:  # the store in use by another daemon, ...
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EX_FAIL


def _run(config: str | None) -> int:
    from edge.config import config_path, load_settings
    from edge.limits import check_state_dir

    settings = load_settings(config, check_drivers=True)
    check_state_dir(settings, config_path(config))
    from edge import logs

    logs.configure(settings.logging.level, settings.logging.format)
    from edge.daemon import Daemon

    daemon = Daemon(settings)
    daemon.config_path = config_path(config)
    return daemon.run()



def _import_structlog_lean() -> None:
    """Import structlog without what only its unused parts load, before anything else does.

    For features this daemon never calls, structlog imports rich when it is installed (pretty
    tracebacks; devices do not install it, only a development tool needs it) and asyncio (its
    async loggers): 66 and 30 modules, 3.6 and 1.2 MB resident on a tablet. While structlog
    loads, rich reads as absent and asyncio as a stand-in that imports the real module when
    structlog first uses it. Any other importer, then as before, gets the real modules.
    """
    if not {"structlog", "asyncio", "rich"}.isdisjoint(sys.modules):
        return  # too late, or already paid for
    sys.modules["asyncio"] = _OnFirstUse("asyncio")
    sys.modules["rich"] = None  # "import rich" raises ImportError, as where it is not installed
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["asyncio"], sys.modules["rich"]


class _OnFirstUse(types.ModuleType):
    """What structlog holds as ``asyncio``: the real module, imported at its first use."""

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__name__)
        if module is self:  # structlog is still loading (it does not use asyncio then)
            raise AttributeError(f"{self.__name__}.{attr} used while structlog loads")
        return getattr(module, attr)
