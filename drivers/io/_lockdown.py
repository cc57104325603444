"""A relay lane's lockdown, kept on disk: a relay module holds no mode, so the driver is its memory.

A serial turnstile controller keeps its own lockdown through our restarts; a
Modbus relay module does not. Held only in memory, a lockdown (one person,
``operate``) ended whenever the driver restarted (a daemon restart, an update,
a driver fault), and the lane took grants again without the two people that
``release`` needs. The lockdown is therefore a marker file under
``state_dir/io/``: present means lockdown. Fail closed both ways: a marker
that cannot be checked reads as a lockdown, and a release whose marker cannot
be removed is refused.
"""

from __future__ import annotations

from pathlib import Path

from edge._fs import atomic_write, fsync_dir
from edge.errors import CommandError


class LockdownRecord:
    """``state_dir/io/<driver>.lockdown``; without a state_dir (a driver outside a daemon) memory only."""

    def __init__(self, state_dir: Path | None, driver: str, log):
        self.path = Path(state_dir) / "io" / f"{driver}.lockdown" if state_dir is not None else None
        self._log = log

    def load(self) -> bool:
        """Whether the lane was left in lockdown."""
        if self.path is None:
            return False
        try:
            held = self.path.exists() or self.path.is_symlink()
        except OSError as exc:
            self._log.error("lockdown_record_unreadable", path=str(self.path), error=str(exc),
                            detail="kept in lockdown: release it (two people) once the file can be read")
            return True
        if held:
            self._log.warning("lockdown_restored", path=str(self.path),
                              detail="the lane was in lockdown before this start; `release` ends it")
        return held

    def enter(self) -> None:
        """Record a lockdown; a disk that refuses is logged, the lockdown still holds in memory."""
        if self.path is None:
            return
        try:
            atomic_write(self.path, b"lockdown\n", mode=0o600)
        except OSError as exc:
            self._log.error("lockdown_not_recorded", path=str(self.path), error=str(exc),
                            detail="the lockdown holds until this driver restarts")

    def leave(self, command: str) -> None:
        """Clear the record before the lockdown ends in memory: CommandError when it cannot be."""
        if self.path is None:
            return
        try:
            self.path.unlink(missing_ok=True)
            fsync_dir(self.path.parent)
        except FileNotFoundError:
            return  # no io/ folder: never recorded
        except OSError as exc:
            raise CommandError(f"{command} refused: the lockdown record {self.path} cannot be removed "
                               f"({exc}); the lane stays in lockdown") from None
