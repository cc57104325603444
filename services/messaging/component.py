"""The messaging cache as a daemon component.

Outbound: compose -> checks (contact on the resident's signed allowlist,
body size, attachments) -> one transaction stores the encrypted message and
appends a ``message.out`` event whose content is sealed to central's X25519
key. State then moves forward only: queued -> sent (the event's PUBACK, seen
as its ``acked_at`` in the store) -> received -> held -> approved / rejected ->
delivered -> read, from central's signed status documents.

Inbound: signed messages on ``msg/in`` are stored once by id (a redelivery is
ignored); reading one emits a ``message.read`` receipt. paho's thread only
queues; one worker thread does the rest.
"""

from __future__ import annotations

import base64
import queue
import sqlite3
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog

from edge import sealing
from edge.errors import EdgeError
from edge.events import canonical_json
from edge.mqtt import topics
from edge.sqlite import open_db
from edge.supervisor import SupervisedThread
from edge.trust import daemon_keys_for, watch_revocations
from services.messaging import _docs
from services.messaging._attachments import AttachmentRefused, check_attachments, check_one
from services.messaging._crypto import AtRest, load_or_create_key, load_seal_public_key, seal_to
from services.messaging._db import MailboxDB, counts

log = structlog.get_logger("edge.messaging")
_TICK_S = 0.5
_RETENTION_EVERY_S = 3600.0


class ComposeRefused(EdgeError):
    """A message the resident wrote cannot be accepted; nothing was stored. ``code`` says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def topic(site: str, device: str, leaf: str) -> str:
    return f"{topics.device_prefix(site, device)}/msg/{leaf}"


class MessagingComponent:
    name = "messaging"

    def __init__(self, daemon):
        s = daemon.settings
        self.daemon, self.settings = daemon, s.messaging
        self.site, self.device = s.site, s.device_id
        root = s.state_dir / "messaging"
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db = MailboxDB(root / "mailbox.db", AtRest(load_or_create_key(s.state_dir, root / "mailbox.key")))
        # Contacts, statuses and inbound messages: keys holding the 'directory' role only.
        self.trusted = daemon_keys_for(daemon, "messaging")
        self.seal_key = load_seal_public_key(s.messaging.central_seal_key) if s.messaging.central_seal_key else None
        self.device_key = sealing.device_key(s.state_dir)  # inbound messages are sealed to it
        self._events_db = s.state_dir / "events.db"
        self._inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events_conn: sqlite3.Connection | None = None
        self.refused = {"contacts": 0, "status": 0, "in": 0}
        self.last_refusal: str | None = None
        self.duplicates = 0
        self._final_status: dict[str, Any] | None = None
        self._verify_held()
        watch_revocations(daemon, lambda: self._inbox.put(("revoked", b"")))  # the worker checks again
        if daemon.link is not None:
            # Subscribed before the link connects: the persistent session hands over what
            # arrived while the tablet was off right after CONNACK; it waits in the queue.
            for leaf in ("contacts", "status", "in"):
                daemon.link.subscribe(topic(self.site, self.device, leaf), self._on_message, qos=1)

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._thread = SupervisedThread(self._run, name="messaging", emit=self.daemon.emit,
                                        on_change=getattr(self.daemon, "notify_health_changed", None))
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread:
            self._thread.stop()
            self._thread.join(timeout=5)
        self._final_status = self.status()  # the daemon writes status.json once more after stops
        self.db.close()

    def _on_message(self, topic_: str, payload: bytes, props) -> None:
        self._inbox.put((topic_.rsplit("/", 1)[-1], bytes(payload)))

    def _run(self) -> None:
        next_retention = 0.0
        awaiting_acks = True  # unknown until the first look
        while not self._stop.is_set():
            # Idle with nothing queued: sleep until a document, a compose (it pokes the
            # inbox) or the retention hour, instead of querying the mailbox twice a second.
            wait = max(0.0, next_retention - time.monotonic())
            try:
                msg = self._inbox.get(timeout=min(wait, _TICK_S) if awaiting_acks else wait)
            except queue.Empty:
                msg = ()
            if msg is None:
                break
            if msg and msg[0] == "revoked":
                self._verify_held()
            elif msg:
                self._handle(*msg)
            awaiting_acks = self._track_sent()
            if time.monotonic() >= next_retention:
                cutoff = time.time() - self.settings.retention_days * 86400
                purged = self.db.purge_older_than(cutoff)
                if purged:
                    log.info("messages_retention_purged", count=purged)
                next_retention = time.monotonic() + _RETENTION_EVERY_S

    # -- from central ---------------------------------------------------------

    def _max_bytes(self, leaf: str) -> int:
        """Largest document of this kind worth parsing: checked before JSON and signatures."""
        if leaf == "in":  # the body, plus the attachments base64-encoded, plus the envelope
            per = (self.settings.max_attachment_bytes + 2) // 3 * 4 + 1024
            return 512 * 1024 + self.settings.max_attachments * per
        return {"contacts": 4 * 1024 * 1024, "status": 64 * 1024}[leaf]

    def _handle(self, leaf: str, raw: bytes) -> None:
        try:
            if leaf in ("in", "contacts"):  # mail and who residents write to cross the broker sealed
                raw = sealing.unseal(raw, self.device_key, self.device, f"messaging.{leaf}")
            doc = self._parse(leaf, raw)
            if leaf == "contacts":
                self._apply_contacts(doc, raw)
            else:
                getattr(self, f"_apply_{leaf}")(doc)
        except (_docs.CentralMessageRefused, AttachmentRefused, sealing.SealError) as exc:
            self.refused[leaf] += 1
            self.last_refusal = str(exc)
            log.error("messaging_central_document_refused", kind=leaf, reason=str(exc))
            self.daemon.emit("message.central_refused", {"kind": leaf, "reason": str(exc)}, "alarm", "messaging")

    def _parse(self, leaf: str, raw: bytes):
        model = {"contacts": _docs.ContactsDoc, "status": _docs.StatusDoc, "in": _docs.InboundDoc}[leaf]
        return _docs.parse_central(raw, model, self.trusted, self.device,
                                   self.site if leaf == "contacts" else None, self._max_bytes(leaf))

    def _apply_contacts(self, doc: _docs.ContactsDoc, signed: bytes) -> None:
        if doc.version <= self.db.contacts_version():
            return
        self.db.replace_contacts(doc, signed)
        log.info("messaging_contacts_applied", version=doc.version, residents=len(doc.residents))

    def _verify_held(self) -> None:
        """The kept allowlist, checked against the trust store as it is now: at start and after each
        revocation (one signed by a key revoked since must not stay in use, nor its version stay
        the floor). Dropped when it fails: no contacts, floor 0, until central's next allowlist."""
        held = self.db.contacts_version()
        if not held:
            return
        signed = self.db.contacts_document()
        if signed is None:  # kept by an older edge, which did not keep the signed document
            self.db.drop_contacts()
            log.warning("messaging_contacts_unverifiable_dropped", version=held,
                        reason="kept without its signed document; central's retained allowlist replaces it")
            return
        try:
            self._parse("contacts", signed)
        except _docs.CentralMessageRefused as exc:
            self.db.drop_contacts()
            why = (f"the held contacts allowlist (version {held}) no longer verifies and was dropped; "
                   f"no resident can write until central sends a new one: {exc}")
            self.refused["contacts"] += 1
            self.last_refusal = why
            log.error("messaging_held_contacts_dropped", version=held, reason=str(exc))
            self.daemon.emit("message.central_refused", {"kind": "contacts", "reason": why}, "alarm", "messaging")

    def _apply_status(self, doc: _docs.StatusDoc) -> None:
        before = self.db.advance(doc.message_id, doc.state, doc.reason)
        log.info("message_state", message_id=doc.message_id, state=doc.state, reason=doc.reason,
                 applied=before is not None)

    def _apply_in(self, doc: _docs.InboundDoc) -> None:
        if self.db.exists(doc.id):
            self.duplicates += 1
            log.info("message_in_duplicate", message_id=doc.id)
            return
        if not self.db.has_resident(doc.resident):
            raise _docs.CentralMessageRefused(f"messaging.in {doc.id}: resident is not on this tablet")
        atts = [(check_one(a.media_type, a.raw(), self.settings.attachment_types,
                           self.settings.max_attachment_bytes, f"attachments[{n}]"), a.raw())
                for n, a in enumerate(doc.attachments)]
        with self.db.tx() as c:
            self.db.insert_message(c, msg_id=doc.id, resident=doc.resident, direction="in", contact=doc.contact,
                                   privileged=doc.privileged, state="delivered", body=doc.body, attachments=atts)
        log.info("message_in_stored", message_id=doc.id, attachments=len(atts))

    # -- sent = the message.out event was PUBACKed ----------------------------

    def _track_sent(self) -> bool:
        """Advance queued messages whose event the broker acked; True while some are still waiting."""
        queued = self.db.queued()
        if not queued:
            return False
        if self._events_conn is None:
            self._events_conn = open_db(self._events_db, readonly=True)
        waiting = len(queued)
        for msg_id, seq in queued:
            row = self._events_conn.execute("SELECT acked_at FROM events WHERE seq = ?", (seq,)).fetchone()
            # Gone from the store means acked and later purged by retention (pending rows never are).
            if row is None or row[0] is not None:
                self.db.advance(msg_id, "sent")
                waiting -= 1
        return waiting > 0

    # -- from the resident (local API) ----------------------------------------

    def compose(self, resident: str, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise ComposeRefused("bad_request", 'expected {"contact": id, "body": text, "attachments": [...]}')
        contact = self.db.contact(resident, doc.get("contact")) if isinstance(doc.get("contact"), str) else None
        if contact is None:
            raise ComposeRefused("unknown_contact", "this contact is not on the resident's approved list; "
                                 "ask staff to request it")
        body = doc.get("body")
        if not isinstance(body, str) or not body.strip():
            raise ComposeRefused("bad_body", "body must be non-empty text")
        if len(body) > self.settings.max_body_chars:
            raise ComposeRefused("bad_body", f"body has {len(body)} characters; at most "
                                 f"{self.settings.max_body_chars}")
        try:
            atts = check_attachments(doc.get("attachments"), allowed=self.settings.attachment_types,
                                     max_bytes=self.settings.max_attachment_bytes,
                                     max_count=self.settings.max_attachments)
        except AttachmentRefused as exc:
            raise ComposeRefused("bad_attachment", str(exc)) from None
        if self.seal_key is None:
            raise ComposeRefused("not_configured", "messaging.central_seal_key is not set; messages cannot "
                                 "be sealed for central")
        msg_id = str(uuid.uuid4())
        created = datetime.now(UTC)
        sealed = seal_to(self.seal_key, canonical_json({
            "message_id": msg_id, "resident": resident, "contact": contact["id"], "body": body,
            "attachments": [{"media_type": t, "data": _b64(d)} for t, d in atts],
            "created_at": created.isoformat()}), aad=msg_id)
        with self.db.tx() as c:  # the event is appended inside: both are kept, or neither
            self.db.insert_message(c, msg_id=msg_id, resident=resident, direction="out", contact=contact["id"],
                                   privileged=contact["privileged"], state="queued", body=body, attachments=atts,
                                   created=created.timestamp())
            event = self.daemon.emit("message.out", {"message_id": msg_id, "privileged": contact["privileged"],
                                                     "sealed": sealed}, "normal", "messaging")
            self.db.set_event_seq(c, msg_id, event.seq)
        self._inbox.put(())  # wakes the loop to watch for this message's ack
        log.info("message_out_queued", message_id=msg_id, attachments=len(atts))
        return {"id": msg_id, "state": "queued"}

    def mark_read(self, resident: str, msg_id: str) -> bool | None:
        newly = self.db.mark_read(resident, msg_id)
        if newly:
            self.daemon.emit("message.read", {"message_id": msg_id, "read_at": datetime.now(UTC).isoformat()},
                             "normal", "messaging")
        return newly

    def purge_resident(self, resident: str) -> dict[str, int]:
        counts = self.db.purge_resident(resident)
        log.info("messaging_resident_purged", **counts)
        return counts

    def status(self) -> dict[str, Any]:
        if self._final_status is not None:
            return self._final_status
        stats = self.db.stats()
        return {**(self._thread.status() if self._thread else {"status": "starting"}),
                "messages": stats["messages"], "residents": stats["residents"],
                "contacts_version": stats["contacts_version"], "unread": stats["unread"],
                "refused": dict(self.refused), "duplicates": self.duplicates,
                "sealing": self.seal_key is not None}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stats_from_disk(state_dir) -> dict[str, Any]:
    """Counts for ``edge messages stats`` without the key (read-only)."""
    path = state_dir / "messaging" / "mailbox.db"
    if not path.exists():
        raise EdgeError(f"no mailbox at {path}; has the tablet daemon started with messaging enabled?")
    conn = open_db(path, readonly=True)
    try:
        found = counts(conn)
    finally:
        conn.close()
    return {**{k: v for k, v in found.items() if k != "oldest_created"},
            "oldest_age_days": _age_days(found["oldest_created"])}


def _age_days(ts: float | None) -> float | None:
    return None if ts is None else round((time.time() - ts) / 86400, 2)


