"""Gallery sync from central: a versioned snapshot plus signed upserts and revokes.

Topics (site-wide, every document signed with a [trust].central_keys key holding the gallery role,
then sealed to the site's devices, edge/sealing.py: the broker never sees a template):

- ``edge/v1/{site}/gallery/snapshot`` (retained): the whole central gallery at
  ``(epoch, version)``.
- ``edge/v1/{site}/gallery/update`` (QoS 1): one change, ``op`` upsert or
  revoke, at ``version`` = the previous version + 1 within the same epoch.
- ``edge/v1/{site}/gallery/request`` (device -> central, QoS 1): "send me a
  snapshot": ``{"device", "epoch", "version", "reason"}``.

Versions make catch-up exact. Updates apply only in order: a duplicate
(version already applied) is dropped; a gap (a later version arrives first)
is held in memory and a snapshot is requested. A snapshot applies when its
``(epoch, version)`` is newer than the device's, then held updates after it
apply. A new ``epoch`` means central rebuilt its gallery: only a snapshot can
start it. Each change commits to the gallery database (with its version)
before the next message is looked at, and the face worker checks the
database before every decision, so a revoke takes effect before any later
decision. A device offline for days gets the retained snapshot and, through
its persistent MQTT session, every update published since.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from drivers.camera.gallery import Gallery, GalleryError, Subject
from edge import sealing
from edge.mqtt import topics
from edge.mqtt.errors import MqttError
from edge.signing import DocumentRejected, open_signed, verify
from edge.supervisor import SupervisedThread
from edge.trust import daemon_keys_for

log = structlog.get_logger("edge.biometrics.sync")
_REQUEST_EVERY_S = 30.0
# Checked before a document is parsed: an update is one subject; a snapshot the whole gallery.
_MAX_DOC_BYTES = {"snapshot": 64 * 1024 * 1024, "update": 256 * 1024}
_HELD_MAX = 10_000  # out-of-order updates kept in memory while waiting for a snapshot
_REPORT_EVERY_S = 2.0  # how soon a local enrollment made by the CLI is reported as an event


class SyncError(GalleryError):
    """A gallery document from central is malformed, unsigned or for another site."""


class NeedsTwoKeys(SyncError):
    """A gallery document that makes someone staff, or starts a new epoch, on one key."""


#: Distinct gallery keys that must sign a document making someone staff (the staff flow is
#: identify then grant: a staff face is a standing pass) or starting a new epoch (an epoch
#: one key could start, ahead of central's, would make every later document of central's
#: "old": no revoke would ever apply again). Central, holding two keys, can always start a
#: new epoch past any version one stolen key made up.
TWO_KEYS = 2


def _when(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(str(value))
    except ValueError:
        raise SyncError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        raise SyncError(f"{where}: {value!r} has no timezone; expected UTC, e.g. 2026-01-31T14:00:00Z")
    return dt.timestamp()


def subject_from_doc(doc: dict[str, Any]) -> Subject:
    """A subject from its wire form: templates are base64 of 128 little-endian float32."""
    if not isinstance(doc, dict):
        raise SyncError("subject: expected an object")
    sid = doc.get("subject_id")
    where = f"subject {sid!r}"
    templates = doc.get("templates")
    if not isinstance(templates, list):
        raise SyncError(f"{where}: 'templates' must be a list of base64 strings")
    try:
        raw = [base64.b64decode(t, validate=True) for t in templates]
    except (ValueError, TypeError):
        raise SyncError(f"{where}: a template is not valid base64") from None
    return Subject(str(sid or ""), str(doc.get("role", "")), raw,
                   _when(doc.get("valid_from"), f"{where}.valid_from"),
                   _when(doc.get("valid_until"), f"{where}.valid_until")).validate()


def _names_staff(doc: dict[str, Any]) -> bool:
    subjects = doc.get("subjects") if "subjects" in doc else [doc.get("subject")]
    return isinstance(subjects, list) and any(isinstance(s, dict) and s.get("role") == "staff" for s in subjects)


def _grants_nothing_new(held: Subject | None, new: Subject) -> bool:
    """Staff already, with these templates, for at least this window: a re-published snapshot
    (or a shortened window) grants nothing the gallery does not already grant."""
    if held is None or held.templates != new.templates:
        return False
    starts_in = held.valid_from is None or (new.valid_from is not None and new.valid_from >= held.valid_from)
    ends_in = held.valid_until is None or (new.valid_until is not None and new.valid_until <= held.valid_until)
    return starts_in and ends_in


def _int(doc: dict, key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SyncError(f"'{key}' must be a non-negative integer, got {value!r}")
    return value


class GallerySync:
    """Daemon component: applies central's gallery documents, in order, on its own thread."""

    name = "gallery"

    def __init__(self, state_dir, site: str, device: str, link, trusted: dict, emit=None):
        self.state_dir, self.site, self.device = state_dir, site, device
        self.link, self.trusted, self._emit = link, trusted, emit
        self._key = sealing.device_key(Path(state_dir))  # templates cross the broker sealed to it
        self.prefix = f"{topics.site_prefix(site)}/gallery"
        self._inbox: queue.Queue = queue.Queue()
        self._held: dict[int, dict[str, Any]] = {}  # version -> update waiting for a gap to fill
        self._thread: SupervisedThread | None = None
        self._last_request = 0.0
        self.applied = self.rejected = self.duplicates = 0
        self.state: dict[str, Any] = {}
        self.idle = threading.Event()

    @classmethod
    def for_daemon(cls, daemon) -> GallerySync:
        s = daemon.settings
        trusted = daemon_keys_for(daemon, "gallery")  # only keys holding the 'gallery' role
        return cls(s.state_dir, s.site, s.device_id, daemon.link, trusted, daemon.emit)

    # -- Component ---------------------------------------------------------------------------
    def start(self) -> None:
        self._gallery = Gallery(self.state_dir)
        self.state = self._gallery.sync_state()
        self._thread = SupervisedThread(self._loop, name="gallery-sync", emit=self._emit)
        self._thread.start()
        self.link.subscribe(f"{self.prefix}/snapshot", self._on_message, qos=1)
        self.link.subscribe(f"{self.prefix}/update", self._on_message, qos=1)

    def stop(self) -> None:
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(timeout=5.0)

    def status(self) -> dict[str, Any]:
        return {**(self._thread.status() if self._thread else {"status": "starting"}),
                "epoch": self.state.get("epoch", 0), "version": self.state.get("version", 0),
                "applied": self.applied, "rejected": self.rejected, "duplicates": self.duplicates,
                "held": len(self._held)}

    # -- network thread: never blocks --------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, _props=None) -> None:
        self.idle.clear()
        self._inbox.put((topic, payload))

    # -- sync thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._report_local()
            if self._inbox.empty():
                self.idle.set()
            try:
                item = self._inbox.get(timeout=_REPORT_EVERY_S)
            except queue.Empty:
                continue
            if item is None:
                self._gallery.close()
                return
            topic, payload = item
            try:
                self.apply(topic.rsplit("/", 1)[-1], payload)
            except GalleryError as exc:  # SyncError too: signature and schema refusals
                self.rejected += 1
                log.warning("gallery_document_rejected", topic=topic, error=str(exc)[:300])
                self._event("biometric.gallery_rejected", {"topic": topic, "error": str(exc)[:300]},
                            "alarm" if isinstance(exc, NeedsTwoKeys) else "normal")

    def apply(self, kind: str, payload: bytes) -> None:
        """Check and apply one document (``kind`` = snapshot | update)."""
        limit = _MAX_DOC_BYTES.get(kind, 0)
        try:  # sealed to this device (and others of the site), signed inside; no model: checked per kind
            if len(payload) > 2 * limit + 4096:  # sealing adds base64 and a header: far less than this
                raise DocumentRejected(f"gallery {kind}", "too_large", f"{len(payload)} bytes is over the "
                                       f"limit for a sealed gallery {kind}; not read")
            inner = sealing.unseal(payload, self._key, self.device, f"gallery {kind}")
            doc = open_signed(inner, self.trusted, None, f"gallery {kind}", site=self.site, max_bytes=limit)
        except (DocumentRejected, sealing.SealError) as exc:
            raise SyncError(str(exc)) from None
        epoch, version = _int(doc, "epoch"), _int(doc, "version")
        # Counted now, while the document is as signed (whether it grants staff is judged when
        # it applies, against the gallery as it is then).
        counted = _names_staff(doc) or (kind == "snapshot" and epoch != self._current()[0])
        doc["_signers"] = len(verify(doc, self.trusted)) if counted else 0
        if kind == "snapshot":
            self._snapshot(doc, epoch, version)
        elif kind == "update":
            self._update(doc, epoch, version)
        else:
            raise SyncError(f"unknown gallery document kind {kind!r}")

    def _current(self) -> tuple[int, int]:
        return self.state.get("epoch", 0), self.state.get("version", 0)

    def _snapshot(self, doc: dict[str, Any], epoch: int, version: int) -> None:
        if (epoch, version) <= self._current():
            self.duplicates += 1
            return
        if epoch != self._current()[0] and self._current() != (0, 0) and doc["_signers"] < TWO_KEYS:
            raise NeedsTwoKeys(f"gallery snapshot {epoch}/{version}: starts a new epoch (this device is at "
                               f"{self._current()[0]}) on {doc['_signers']} key(s); a new epoch needs "
                               f"signatures from {TWO_KEYS} distinct keys holding the gallery role; not applied")
        subjects = doc.get("subjects")
        if not isinstance(subjects, list):
            raise SyncError("gallery snapshot: 'subjects' must be a list")
        parsed = [subject_from_doc(s) for s in subjects]
        self._check_staff(parsed, doc, f"gallery snapshot {epoch}/{version}")
        count = self._gallery.replace_central(parsed, epoch, version)
        self._settle_local(doc, epoch, version)
        self._applied("snapshot", epoch, version, subjects=count)
        self._held = {v: d for v, d in self._held.items() if d["epoch"] == epoch and v > version}
        self._drain()

    def _report_local(self) -> None:
        """Local enrollments (made by `edge biometrics enroll`) become events in the audit chain."""
        for e in self._gallery.unreported_enrollments():
            when = datetime.fromtimestamp(e.pop("enrolled_at"), UTC).isoformat()
            log.warning("gallery_local_enrollment", subject_id=e["subject_id"], operator=e["operator"],
                        approved_by=e["approved_by"])
            self._event("biometric.local_enrollment", {**e, "enrolled_at": when}, "alarm")
            self._gallery.mark_reported(e["subject_id"])

    def _settle_local(self, doc: dict[str, Any], epoch: int, version: int) -> None:
        self._report_local()  # a snapshot never settles an enrollment central has not been told of
        vouched = doc.get("local_enrollments") or []
        if not isinstance(vouched, list) or not all(isinstance(v, dict) for v in vouched):
            raise SyncError("gallery snapshot: 'local_enrollments' must be a list of {subject_id, template_sha256}")
        issued = _when(doc.get("issued_at"), "gallery snapshot: issued_at") or time.time()
        outcomes = self._gallery.settle_local({v.get("subject_id"): v.get("template_sha256") for v in vouched},
                                              issued)
        for sid, outcome in outcomes:
            why = ("central's snapshot lists it with the same templates" if outcome == "confirmed" else
                   "central's snapshot does not list it (or lists other templates): enrolled locally, "
                   "never confirmed")
            log.warning("gallery_local_enrollment_settled", subject_id=sid, outcome=outcome)
            self._event("biometric.local_enrollment_settled", {"subject_id": sid, "outcome": outcome,
                                                                "reason": why, "epoch": epoch, "version": version},
                        "alarm" if outcome == "removed" else "normal")

    def _update(self, doc: dict[str, Any], epoch: int, version: int) -> None:
        cur_epoch, cur_version = self._current()
        if epoch < cur_epoch or (epoch == cur_epoch and version <= cur_version):
            self.duplicates += 1
            return
        self._check_update(doc)
        if len(self._held) >= _HELD_MAX:  # far behind: a snapshot is cheaper than holding more
            self._held.clear()
        self._held[version] = doc
        if epoch != cur_epoch or version != cur_version + 1:
            self._request(f"gap: have {cur_epoch}/{cur_version}, got {epoch}/{version}")
            return
        self._drain()

    @staticmethod
    def _check_update(doc: dict[str, Any]) -> None:
        op = doc.get("op")
        if op == "upsert":
            doc["_subject"] = subject_from_doc(doc.get("subject"))
        elif op == "revoke":
            if not isinstance(doc.get("subject_id"), str) or not doc["subject_id"]:
                raise SyncError("gallery revoke: 'subject_id' must be a non-empty string")
        else:
            raise SyncError(f"gallery update: op {op!r}; expected upsert or revoke")

    def _drain(self) -> None:
        """Apply held updates while they continue the current version without a gap."""
        while True:
            epoch, version = self._current()
            doc = self._held.pop(version + 1, None)
            if doc is None or doc["epoch"] != epoch:
                return
            sync = (epoch, version + 1)
            if doc["op"] == "upsert":
                self._check_staff([doc["_subject"]], doc, f"gallery update {epoch}/{version + 1}")
                self._gallery.upsert(doc["_subject"], source="central", sync=sync)
                self._applied("upsert", *sync, subject_id=doc["_subject"].subject_id)
            else:
                self._gallery.revoke(doc["subject_id"], sync=sync)
                self._applied("revoke", *sync, subject_id=doc["subject_id"])

    def _check_staff(self, subjects: list[Subject], doc: dict[str, Any], what: str) -> None:
        """NeedsTwoKeys when the document makes someone staff (new, or with other templates
        or a longer window than the gallery holds now) on fewer than TWO_KEYS keys."""
        staff = [s for s in subjects if s.role == "staff"]
        if not staff:
            return
        now = {s.subject_id: s for s in self._gallery.subjects(role="staff")}
        granted = [s.subject_id for s in staff if not _grants_nothing_new(now.get(s.subject_id), s)]
        if granted and doc.get("_signers", 0) < TWO_KEYS:
            names = ", ".join(granted[:5]) + (f" and {len(granted) - 5} more" if len(granted) > 5 else "")
            raise NeedsTwoKeys(
                f"{what}: makes {names} staff (a standing pass: identify, then grant) on "
                f"{doc.get('_signers', 0)} key(s); it needs signatures from {TWO_KEYS} distinct keys holding "
                "the gallery role; not applied")

    def _applied(self, op: str, epoch: int, version: int, **detail: Any) -> None:
        self.state = self._gallery.sync_state()
        self.applied += 1
        log.info("gallery_applied", op=op, epoch=epoch, gallery_version=version, **detail)
        self._event("biometric.gallery_updated", {"op": op, "epoch": epoch, "version": version, **detail},
                    "telemetry")

    def _request(self, reason: str) -> None:
        """Ask central for a snapshot (rate-limited); the retained one may already be on its way."""
        now = time.monotonic()
        if now - self._last_request < _REQUEST_EVERY_S or not self.link.connected:
            return
        self._last_request = now
        epoch, version = self._current()
        body = {"device": self.device, "epoch": epoch, "version": version, "reason": reason}
        try:
            self.link.publish(f"{self.prefix}/request", json.dumps(body).encode(), qos=1)
            log.info("gallery_snapshot_requested", reason=reason)
        except MqttError as exc:  # not connected: the next gap or snapshot asks again
            log.warning("gallery_snapshot_request_failed", error=str(exc))

    def _event(self, type: str, payload: dict[str, Any], priority: str) -> None:
        if self._emit is not None:
            self._emit(type, payload, priority, "gallery")
