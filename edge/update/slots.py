"""A/B slots under the install root: install offline, switch atomically, confirm or roll back.

Layout (``ROOT/opt/edge``, the same prefix scripts/install.sh installs into):

- ``bin/edge``: the base install made by scripts/install.sh (runs when there is no ``current``)
- ``releases/VERSION/``: one virtualenv per installed release
- ``current`` -> ``releases/VERSION``: the slot the service starts
- ``update-state.json``: the record (see ``edge.update.boot``)
- ``boot.py``: the launcher, copied from the running release

Every step is ordered so that a power cut leaves a startable slot and a record that
says what happened: a slot counts only once its ``COMPLETE`` marker is written (last); the record says ``switched`` before the link moves;
a rollback moves the link before the record. ``recover()`` tidies what a cut left.
The virtualenv is made like scripts/install.sh's ``--no-venv-pip`` mode (a venv without
pip, filled by the build interpreter's pip), from the verified wheelhouse only (``--no-index``).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from edge.errors import EdgeError
from edge.update import boot

log = structlog.get_logger("edge.update")
KEEP_PREVIOUS = 2
STEPS = ("begin", "extract", "venv", "pip", "activate", "installed", "switch", "switched")


class InstallFailed(EdgeError):
    """A release could not be installed into its slot; the running slot is untouched."""


class Slots:
    """The slots of one install root. ``on_step(name)`` is called before each step."""

    def __init__(self, root: str | Path, *, python: str = "python3",
                 on_step: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.home = boot.home(self.root)
        self.releases = self.home / "releases"
        self.python = python
        self._on_step = on_step or (lambda step: None)

    # -- the record ----------------------------------------------------------------------

    def record(self) -> dict:
        return boot.read_record(self.root)

    def _save(self, record: dict) -> None:
        boot.write_record(self.root, record)

    def slot(self, version: str) -> Path:
        return self.releases / version

    # -- install -------------------------------------------------------------------------

    def install(self, archive: Path, version: str) -> Path:
        """Build releases/VERSION from a verified wheelhouse archive; returns the slot."""
        self._on_step("begin")
        record = self.record()
        if version == boot.linked_version(self.root):
            raise InstallFailed(f"release {version} is the running slot; not reinstalled")
        self._save({**record, "state": "installing", "pending": version})
        # Built where it will run (a venv's scripts name their interpreter by absolute path);
        # a slot without its COMPLETE marker is unfinished and never started.
        slot, wheels = self.slot(version), self.releases / f".{version}.wheelhouse"
        for leftover in (slot, wheels):
            shutil.rmtree(leftover, ignore_errors=True)
        self._on_step("extract")
        self._extract(archive, wheels)
        self._on_step("venv")
        self._run([self.python, "-m", "venv", "--without-pip", str(slot)], "create the virtualenv")
        self._on_step("pip")
        self._run([self.python, "-m", "pip", "--python", str(slot / "bin" / "python"), "install", "-q",
                   "--no-index", "--no-cache-dir", "--find-links", str(wheels), f"edge=={version}"],
                  "install the wheelhouse")
        if not (slot / "bin" / "edge").exists():
            raise InstallFailed(f"release {version} installed no bin/edge")
        self._on_step("activate")
        boot.mark_complete(slot)
        shutil.rmtree(wheels, ignore_errors=True)
        self._on_step("installed")
        self._save({**self.record(), "state": "installed", "pending": version})
        return self.slot(version)

    def _extract(self, archive: Path, dest: Path) -> None:
        dest.mkdir(parents=True)
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".whl")]
                if not members:
                    raise InstallFailed(f"{archive.name}: no wheels in the archive")
                for member in members:
                    member.name = Path(member.name).name  # flat: no paths from the archive
                    tar.extract(member, dest, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise InstallFailed(f"{archive.name}: not a readable wheelhouse archive ({exc})") from None

    def _run(self, argv: list[str], what: str) -> None:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InstallFailed(f"could not {what}: {exc}") from None
        if done.returncode != 0:
            raise InstallFailed(f"could not {what}: {(done.stderr or done.stdout).strip()[-500:]}")

    # -- switch, confirm, roll back -----------------------------------------------------------

    def switch(self, version: str, *, deadline_s: float, max_attempts: int) -> None:
        """Make releases/VERSION the slot the service starts, on probation until confirmed."""
        if not boot.is_complete(self.slot(version)):
            raise InstallFailed(f"release {version} is not (completely) installed")
        self._on_step("switch")
        record = self.record()
        self._save({**record, "state": "switched", "pending": version,
                    "rollback_to": boot.linked_version(self.root), "attempts": 0,
                    "max_attempts": max_attempts, "deadline": time.time() + deadline_s})
        boot.point_current(self.root, version)
        self._on_step("switched")

    def confirm(self, version: str) -> dict:
        """The new slot passed its health check: it stays, old slots beyond two go."""
        record = self.record()
        previous = record.get("rollback_to")
        history = [v for v in [previous, *record.get("history", [])] if v and v != version]
        record.update(state="confirmed", current=version, pending=None, history=history[:KEEP_PREVIOUS],
                      last_result={"result": "confirmed", "version": version, "at": time.time()},
                      reported=True)
        self._save(record)
        self.prune()
        return record

    def roll_back(self, reason: str, *, reported: bool = False) -> dict:
        return boot.roll_back(self.root, self.record(), reason, reported=reported)

    def prune(self) -> None:
        """Delete slots other than the current one, the two previous and a pending one."""
        record = self.record()
        keep = {boot.linked_version(self.root), record.get("pending"), *record.get("history", [])}
        for path in self.releases.glob("*") if self.releases.is_dir() else []:
            if path.name not in keep or path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)
                log.info("update_slot_pruned", slot=path.name)

    def recover(self) -> dict:
        """After a cut: forget a half-done install (the running slot never changed)."""
        record = self.record()
        if record.get("state") in ("installing", "installed"):
            pending = record.get("pending")
            if pending and pending != boot.linked_version(self.root) and not boot.is_complete(self.slot(pending)):
                shutil.rmtree(self.slot(pending), ignore_errors=True)
            record.update(state="idle", pending=None, last_result={
                "result": "interrupted", "version": pending, "at": time.time(),
                "reason": f"install stopped while {record['state']}; will retry"}, reported=False)
            self._save(record)
        for leftover in self.releases.glob(".*") if self.releases.is_dir() else []:
            shutil.rmtree(leftover, ignore_errors=True)
        return record

    def install_launcher(self) -> None:
        """Copy this release's launcher beside the slots (it must not live inside one)."""
        src = Path(boot.__file__)
        tmp = self.home / ".boot.py.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(self.home / "boot.py")
