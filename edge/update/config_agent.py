"""The daemon's remote-config component: receive, verify, apply, confirm or roll back.

Documents arrive retained on ``edge/v1/{site}/{device}/config`` (this device) and
``edge/v1/{site}/config`` (the whole site). A change of driver options restarts only
those drivers, in place; any other change restarts the daemon (exit 75) and the new
process confirms it. Either way the change must pass the health check within
``remote_config.health_deadline_s`` (a changed broker must also be reached), or the
last good config comes back on its own and ``config.rolled_back`` is raised.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from edge._fs import atomic_write
from edge.update import health
from edge.update import remote_config as rc

log = structlog.get_logger("edge.remote_config")
SETTLE_S = 1.0
_POLL_S = 0.5
_REVOKED = object()  # queued by the trust store's listener: check the applied document again


class RemoteConfigAgent:
    name = "remote_config"

    def __init__(self, daemon, config_path: Path):
        from edge.trust import daemon_keys_for, watch_revocations

        s = daemon.settings
        self._daemon, self.config_path, self.state_dir = daemon, Path(config_path), s.state_dir
        self.trusted = daemon_keys_for(daemon, rc.DOCUMENT_TYPE)  # anchors with the config role, live
        self.deadline_s, self.skew_s = s.remote_config.health_deadline_s, s.trust.clock_skew_s
        self._local = tomllib.loads(self.config_path.read_text())  # the base, without the overlay
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = None  # a SupervisedThread once started
        self._last: dict[str, Any] = {"refusal": None}
        watch_revocations(daemon, lambda: self._inbox.put(_REVOKED))
        for topic in (f"edge/v1/{s.site}/{s.device_id}/config", f"edge/v1/{s.site}/config"):
            daemon.link.subscribe(topic, lambda _t, payload, _p: self._inbox.put(bytes(payload)), qos=1)

    def _emit(self, name: str, payload: dict[str, Any], priority: str = "normal") -> None:
        self._daemon.emit(f"config.{name}", payload, priority, "remote_config")

    def start(self) -> None:
        from edge.supervisor import SupervisedThread

        self._thread = SupervisedThread(self._run, name="remote-config", emit=self._daemon.emit,
                                        on_change=getattr(self._daemon, "notify_health_changed", None))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread:
            self._thread.stop()
            self._thread.join(10)

    def status(self) -> dict[str, Any]:
        record = rc.read_record(self.state_dir)
        state = self._thread.status() if self._thread else {"status": "starting"}
        return {**state, "applied": record.get("applied", 0), "pending": record.get("pending"),
                "failed": record.get("failed", []), "last_result": record.get("last_result"), **self._last}

    def _run(self) -> None:
        record = rc.read_record(self.state_dir)
        if record.get("pending"):
            self._settle_after_restart(record)
        self._verify_held()
        while not self._stop.is_set():
            raw = self._inbox.get()
            if raw is None:
                return
            if raw is _REVOKED:
                self._verify_held()
            else:
                self._handle(raw)

    # -- a new document ---------------------------------------------------------------------

    def _handle(self, raw: bytes) -> None:
        record = rc.read_record(self.state_dir)
        try:
            # expired by the daemon's trusted time (never before its time floor): a clock set back
            # revives no expired document
            now = datetime.fromtimestamp(self._daemon.trusted_now(), UTC)
            doc, new = validate(raw, self.trusted, data=self._local, record=record, skew_s=self.skew_s, now=now)
        except rc.ConfigRefused as exc:
            self._refused(exc, raw, record)
            return
        drivers, restart = rc.affected(list(doc.settings))
        # The record first: a power cut before the file is replaced is seen at the next start.
        record.update(pending=doc.version, deadline=time.time() + self.deadline_s, keys=sorted(doc.settings))
        rc.write_record(self.state_dir, record)
        self._keep_good_and_write(raw)
        self._emit("accepted", {"version": doc.version, "keys": sorted(doc.settings),
                                "restart": "daemon" if restart else sorted(drivers)})
        if restart:
            self._daemon.request_restart(f"remote config {doc.version}")
            return
        old = self._daemon.settings
        self._swap_drivers(new, drivers)
        problems = self._wait_healthy(record)
        if problems is None:
            return  # stopping: still pending; the next start confirms it or rolls it back
        if problems:
            self._swap_drivers(old, drivers)
            self._roll_back(record, "health check failed: " + "; ".join(problems))
        else:
            self._confirm(record, sorted(drivers))

    def _refused(self, exc: rc.ConfigRefused, raw: bytes, record: dict) -> None:
        if exc.problem == "replayed" and self._known(raw, record):
            return  # the retained copy of what was applied (or rolled back) coming again
        self._last["refusal"] = {"problem": exc.problem, "detail": exc.detail, "at": time.time()}
        log.warning("remote_config_refused", problem=exc.problem, detail=exc.detail)
        self._emit("refused", {"problem": exc.problem, "detail": exc.detail}, "alarm")

    def _known(self, raw: bytes, record: dict) -> bool:
        try:
            version = rc.open_document(raw, self.trusted, site=self._local.get("site"),
                                       device=self._local.get("device_id")).version
        except rc.ConfigRefused:
            return False
        return version == record.get("applied") or version in record.get("failed", [])

    def _keep_good_and_write(self, raw: bytes) -> None:
        current, good = rc.remote_path(self.config_path), rc.good_path(self.config_path)
        if current.exists():
            atomic_write(good, current.read_bytes(), 0o640)
        else:
            good.unlink(missing_ok=True)
        atomic_write(current, raw, 0o640)

    def _swap_drivers(self, settings, names: set[str]) -> None:
        """Restart only the named drivers, with their entries from ``settings``."""
        self._daemon.settings = settings
        for entry in settings.drivers:
            if entry.name in names:
                self._daemon.supervisor.replace(entry)

    # -- confirm or roll back -------------------------------------------------------------------

    def _wait_healthy(self, record: dict) -> list[str] | None:
        """[] once healthy for SETTLE_S before the deadline; else the last problems found;
        None when the daemon stops meanwhile (no decision)."""
        need_broker = any(k.startswith("mqtt.") for k in record.get("keys", []))
        healthy_since, found = None, ["not checked yet"]
        while time.time() <= record.get("deadline", 0) and not self._stop.wait(_POLL_S):
            found = health.problems(self._daemon, skip=self.name)
            if need_broker and not (self._daemon.link is not None and self._daemon.link.connected):
                found.append("the broker named by the new config was not reached")
            if found:
                healthy_since = None
            elif healthy_since is None:
                healthy_since = time.monotonic()
            elif time.monotonic() - healthy_since >= SETTLE_S:
                return []
        return None if self._stop.is_set() else found

    def _open(self, path: Path) -> rc.ConfigDocument:
        """A kept document, checked as load_settings checks it (OSError, ConfigRefused)."""
        return rc.open_document(path.read_bytes(), self.trusted, site=self._local.get("site"),
                                device=self._local.get("device_id"))

    def _stored_version(self) -> int | None:
        try:
            return self._open(rc.remote_path(self.config_path)).version
        except (OSError, rc.ConfigRefused):
            return None

    def _verify_held(self) -> None:
        """The applied document, checked against the trust store as it is now: at start and after
        each revocation. One that fails (its signer revoked) no longer sets the version floor: the
        last good document does if it still verifies, and is kept in its place; else none does.
        The running settings stay until the next document or restart (which loads what is kept)."""
        record = rc.read_record(self.state_dir)
        applied = record.get("applied", 0)
        if not applied or record.get("pending"):
            return
        current, good = rc.remote_path(self.config_path), rc.good_path(self.config_path)
        try:
            self._open(current)
            return
        except (OSError, rc.ConfigRefused) as exc:
            problem = str(exc)
        if current.exists():
            current.replace(current.with_suffix(".dropped.json"))  # kept for whoever investigates
        try:
            floor = self._open(good).version
            atomic_write(current, good.read_bytes(), 0o640)
        except (OSError, rc.ConfigRefused):
            floor = 0
            good.unlink(missing_ok=True)
        why = (f"the applied document (version {applied}) no longer verifies and was dropped; the version "
               f"floor is now {floor}, and the running settings stay until the next document: {problem}")
        record.update(applied=floor, last_result={"result": "dropped", "version": applied, "reason": why,
                                                  "at": time.time()})
        rc.write_record(self.state_dir, record)
        self._last["refusal"] = {"problem": "dropped", "detail": why, "at": time.time()}
        log.error("remote_config_held_dropped", version=applied, floor=floor, reason=problem)
        self._emit("refused", {"problem": "dropped", "detail": why}, "alarm")

    def _settle_after_restart(self, record: dict) -> None:
        if self._stored_version() != record["pending"]:  # cut before the document was written
            log.warning("remote_config_interrupted", version=record["pending"])
            record.update(pending=None)  # the retained document comes again and is applied then
            rc.write_record(self.state_dir, record)
            return
        if time.time() > record.get("deadline", 0):  # load_settings already fell back to the good one
            self._roll_back(record, "the daemon did not confirm the config before the deadline", restart=False)
            return
        problems = self._wait_healthy(record)
        if problems is None:
            return
        if problems:
            self._roll_back(record, "health check failed: " + "; ".join(problems), restart=True)
        else:
            self._confirm(record, "daemon")

    def _confirm(self, record: dict, restarted) -> None:
        version = record["pending"]
        record.update(applied=version, pending=None, last_result={"result": "applied", "version": version,
                                                                  "at": time.time()})
        rc.write_record(self.state_dir, record)
        self._emit("applied", {"version": version, "restarted": restarted})
        log.info("remote_config_applied", version=version, restarted=restarted)

    def _roll_back(self, record: dict, reason: str, *, restart: bool = False) -> None:
        version = record["pending"]
        current, good = rc.remote_path(self.config_path), rc.good_path(self.config_path)
        if good.exists():
            shutil.copyfile(good, current.with_name(".remote.restore"))
            Path(current.with_name(".remote.restore")).replace(current)
        else:
            current.unlink(missing_ok=True)
        record.update(pending=None, failed=[*record.get("failed", []), version][-20:], last_result={
            "result": "rolled_back", "version": version, "reason": reason, "at": time.time()})
        rc.write_record(self.state_dir, record)
        self._emit("rolled_back", {"version": version, "reason": reason}, "alarm")
        log.error("remote_config_rolled_back", version=version, reason=reason)
        if restart:
            self._daemon.request_restart(f"remote config {version} rolled back")


def validate(raw: bytes | str, trusted, *, data: dict[str, Any], record: dict, skew_s: float,
             now: datetime | None = None) -> tuple[rc.ConfigDocument, Any]:
    """Every check of a new document, in order; returns it and the merged, validated Settings.
    (Here, not in remote_config: reading the accepted document at load time needs no Settings.)"""
    from edge.config import Settings, _driver_option_errors, _error_lines

    doc = rc.open_document(raw, trusted, site=data.get("site"), device=data.get("device_id"))
    rc.check_time(doc, skew_s, now or datetime.now(UTC))
    if doc.version <= record.get("applied", 0) or doc.version in record.get("failed", []):
        raise rc.ConfigRefused("replayed", f"version {doc.version} is not newer than the applied "
                            f"{record.get('applied', 0)} (or was rolled back)")
    rc.check_allowed(doc)
    if (problem := rc.plaintext_problem(data, doc.settings)) is not None:
        raise rc.ConfigRefused("not_allowed", problem)
    merged = rc.merge(data, doc.settings)
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise rc.ConfigRefused("invalid", "; ".join(_error_lines(exc))[:400]) from None
    problems = _driver_option_errors(list(enumerate(settings.drivers)))
    if problems:
        raise rc.ConfigRefused("invalid", "; ".join(problems)[:400])
    return doc, settings
