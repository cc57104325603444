"""``edge run`` without click: systemd starts the daemon as ``edge --config PATH run``.

Once imported, click (and gettext, platform, inspect behind it) stays resident for the
daemon's whole life: 1.1 MB on a tablet, to read two words. ``edge.cli._fast`` sends the
plain forms here; ``edge run --help`` and anything unusual go through click (``run.py``), which
calls the same ``main``, so errors and exit codes are the same either way.
"""

from __future__ import annotations

import sys

EX_FAIL, EX_CONFIG = 1, 78


def main(config: str | None) -> int:
    """Run the daemon until SIGTERM; the exit code (78: a bad config, 1: another refusal)."""
    import edge.logs  # noqa: F401  (first: structlog is imported lean, edge.logs says why)
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
    import os

    # Events, the command ledger and status hold people's movements: never readable by other
    # accounts, run by hand as by systemd (whose unit sets UMask=0077 too). Stricter kept.
    os.umask(os.umask(0o077) | 0o077)
    from edge.config import config_path, load_settings
    from edge.limits import check_state_dir

    settings = load_settings(config, check_drivers=True)
    check_state_dir(settings, config_path(config))
    from edge import logs

    logs.configure(settings.logging.level, settings.logging.format)
    import structlog

    from edge.config import ignored_env

    for line in ignored_env():  # a misspelt EDGE_ variable changes nothing: say so at start
        structlog.get_logger("edge").warning("environment_variable_ignored", detail=line)
    try:
        mode = settings.state_dir.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0  # made by the daemon under the umask above
    if mode & 0o007:  # the files inside are 0600; their names and sizes still tell a story
        structlog.get_logger("edge").warning(
            "state_dir_open_to_others", path=str(settings.state_dir), mode=oct(mode),
            detail=f"other accounts can list this folder; run: chmod 0710 {settings.state_dir} "
                   "(operators reach control.sock through group edge)")
    from edge.daemon import Daemon

    daemon = Daemon(settings)
    daemon.config_path = config_path(config)
    return daemon.run()
