"""The daemon's update component: look for a release, install it beside the running one,
switch when the lanes are empty, and confirm (or roll back) the slot after a restart.

Events (source ``update``): ``update.offered``, ``update.installed``,
``update.confirmed``, ``update.rolled_back`` (alarm), ``update.refused`` (alarm: the
channel failed a TUF check or offered an older release), ``update.interrupted``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict
from importlib import metadata
from typing import Any

import structlog

from edge.update import boot, health
from edge.update.slots import InstallFailed, Slots
from edge.update.tuf_client import ReleaseSource, UpdateRefused, parse_version

log = structlog.get_logger("edge.update")
SETTLE_S = 1.0  # healthy this long without a break before a slot is confirmed
_POLL_S = 0.5


def running_version() -> str:
    """The slot the launcher started (EDGE_SLOT), else the installed package's version."""
    return os.environ.get("EDGE_SLOT") or metadata.version("edge")


def refusal_action(refusal: dict[str, Any], settings) -> str:
    """The refusal in force, in words, with the setting to change or where to look next."""
    problem = refusal.get("problem")
    if problem == "too_slow":
        return (f"updates STALLED: downloads are too slow ({refusal.get('role')}: {refusal.get('received_bytes')} "
                f"bytes in {refusal.get('elapsed_s')} s, {refusal.get('limit')} passed) and are abandoned. On a "
                f"slow link lower [update] download_min_rate (now {settings.download_min_rate:g} bytes/s; the "
                f"deadline grows with it) in the config and restart edge; else check the link to "
                f"{refusal.get('url')}")
    return f"updates REFUSED ({problem}): {refusal.get('detail')}"


class UpdateAgent:
    """Checks the TUF channel every ``check_interval_s`` and drives the slots."""

    name = "update"

    def __init__(self, daemon, *, source_factory=None):
        self._daemon = daemon
        self.settings = daemon.settings.update
        self.slots = Slots(self.settings.install_root, python=self.settings.python)
        self.version = running_version()
        self._source_factory = source_factory or self._default_source
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last: dict[str, Any] = {"checked_at": None, "offer": None, "refusal": None, "waiting_for_idle": False}
        self._offered: set[str] = set()
        self._refusal_key: tuple | None = None

    def _default_source(self) -> ReleaseSource:
        s = self._daemon.settings
        return ReleaseSource(self.settings, device_class=s.role, site=s.site, cache_dir=s.state_dir / "update")

    def _emit(self, name: str, payload: dict[str, Any], priority: str = "normal") -> None:
        self._daemon.emit(f"update.{name}", {"running": self.version, **payload}, priority, "update")

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        record = self.slots.recover()
        self._report_outcome(record)
        if record.get("state") == "switched" and record.get("pending") == self.version:
            self._spawn(self._confirm_loop, "update-confirm")
        elif record.get("state") == "switched" and "EDGE_SLOT" not in os.environ:
            # Started without the launcher: the new slot can never run, so never confirm.
            record = self.slots.roll_back("the service does not start through the update launcher "
                                          "(boot.py, see docs/updates.md)")
            self._report_outcome(record)
        if self.settings.metadata_url:
            self._spawn(self._check_loop, "update-check")

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def status(self) -> dict[str, Any]:
        record = self.slots.record()
        report = {"status": "ok", "version": self.version, "slot": boot.linked_version(self.settings.install_root),
                  "state": record.get("state"), "pending": record.get("pending"),
                  "last_result": record.get("last_result"), **self._last,
                  "refusal_in_force": self._refusal_key is not None}
        if report["refusal_in_force"] and self._last["refusal"]:
            # `edge status` and `edge doctor` say it: no release gets here until someone acts
            action = refusal_action(self._last["refusal"], self.settings)
            report.update(status="degraded", refusal={**self._last["refusal"], "action": action},
                          note=f"{action} (`edge update status`)")
        return report

    def _report_outcome(self, record: dict) -> None:
        """Say what happened while this process was not running (a rollback by the launcher)."""
        result = record.get("last_result")
        if not result or record.get("reported", True):
            return
        name = "rolled_back" if result["result"] == "rolled_back" else "interrupted"
        self._emit(name, {"version": result.get("version"), "reason": result.get("reason")},
                   "alarm" if name == "rolled_back" else "normal")
        boot.write_record(self.settings.install_root, {**self.slots.record(), "reported": True})

    # -- confirming a new slot --------------------------------------------------------------

    def _confirm_loop(self) -> None:
        deadline = self.slots.record().get("deadline", 0)
        healthy_since, found = None, ["not checked yet"]
        while not self._stop.wait(_POLL_S):
            found = health.problems(self._daemon)
            if found:
                healthy_since = None
            elif healthy_since is None:
                healthy_since = time.monotonic()
            elif time.monotonic() - healthy_since >= SETTLE_S:
                self.slots.confirm(self.version)
                self._emit("confirmed", {"version": self.version})
                log.info("update_confirmed", version=self.version)
                self._install_launcher()
                return
            if time.time() > deadline:
                reason = "health check failed: " + "; ".join(found)
                record = self.slots.roll_back(reason, reported=True)
                self._emit("rolled_back", {"version": self.version, "reason": reason,
                                           "to": record.get("rollback_to")}, "alarm")
                log.error("update_rolled_back", version=self.version, reason=reason)
                self._daemon.request_restart("update rolled back")
                return

    def _install_launcher(self) -> None:
        try:
            self.slots.install_launcher()
        except OSError as exc:
            log.warning("update_launcher_not_copied", error=str(exc))

    # -- looking for, installing and switching to a release ----------------------------------

    def _check_loop(self) -> None:
        delay = min(1.0, self.settings.check_interval_s)
        while not self._stop.wait(delay):
            delay = self.settings.check_interval_s
            if self.slots.record().get("state") == "switched":
                continue  # a slot is on probation: nothing new until it is decided
            try:
                self.check_once()
                self._refusal_key = None  # the channel works again: the next refusal is news
            except UpdateRefused as exc:
                self._refused(exc.problem, exc.detail, exc.facts)
            except InstallFailed as exc:
                self._refused("install_failed", str(exc))
            except OSError as exc:  # downloads and records: a full or broken disk
                self._refused("local_io", f"{type(exc).__name__}: {exc}"[:300])

    def _refused(self, problem: str, detail: str, facts: dict | None = None) -> None:
        """Status, log and (once per distinct refusal, not every check) an alarm.

        ``facts`` are the structured fields of a refusal (too_slow: url, role, bytes, seconds,
        limit); a download abandoned again at another byte count is the same refusal."""
        facts = facts or {}
        self._last["refusal"] = {"problem": problem, "detail": detail, **facts, "at": time.time()}
        log.warning("update_refused", problem=problem, detail=detail, **facts)
        key = (problem, facts["url"], facts["limit"]) if "limit" in facts else (problem, detail)
        if self._refusal_key != key:
            self._refusal_key = key
            self._emit("refused", {"problem": problem, "detail": detail, **facts}, "alarm")

    def check_once(self) -> bool:
        """One look at the channel; True when a switch to a new slot was made (restart follows)."""
        source = self._source_factory()
        offer = source.find()
        self._last.update(checked_at=time.time(), offer=asdict(offer) if offer else None)
        if offer is None or not self._wanted(offer):
            return False
        if offer.version not in self._offered:
            self._offered.add(offer.version)
            self._emit("offered", {"version": offer.version, "group": offer.group, "sha256": offer.sha256})
        from edge.update.boot import is_complete

        if not is_complete(self.slots.slot(offer.version)):
            archive = source.download(offer, self._daemon.settings.state_dir / "update" / "downloads"
                                      / f"edge-{offer.version}.tar.gz")
            self.slots.install(archive, offer.version)
            archive.unlink(missing_ok=True)
            self._emit("installed", {"version": offer.version})
        if not self._wait_idle():
            log.info("update_deferred", version=offer.version, reason="a lane is in use")
            return False
        s = self.settings
        self.slots.switch(offer.version, deadline_s=s.health_deadline_s, max_attempts=s.max_boot_attempts)
        log.info("update_switching", version=offer.version)
        self._daemon.request_restart(f"update to {offer.version}")
        return True

    def _wanted(self, offer) -> bool:
        if offer.version in self.slots.record().get("failed", []):
            return False  # rolled back once: only a newer release is tried
        new, old = parse_version(offer.version), parse_version(self.version)
        if new < old:
            raise UpdateRefused("older_release", f"offered {offer.version}, running {self.version}")
        return new > old

    # -- the idle gate -----------------------------------------------------------------------

    def _idle(self) -> bool:
        """No person in any lane (no approach, nobody passing); tablets are always idle."""
        for component in self._daemon.components:
            if component.name == "gate":
                lanes = component.status().get("lanes", {})
                return all(not lane.get("approach") and not lane.get("passing") for lane in lanes.values())
        return True

    def _wait_idle(self) -> bool:
        end = time.monotonic() + self.settings.idle_wait_max_s
        self._last["waiting_for_idle"] = True
        try:
            while not self._idle():
                if time.monotonic() >= end or self._stop.wait(_POLL_S):
                    return False
            return True
        finally:
            self._last["waiting_for_idle"] = False
