"""The mailbox database: per-resident messages, attachments and contacts, encrypted at rest.

SQLite in WAL mode with ``secure_delete`` on, so purged rows are overwritten
rather than left in free pages, and a TRUNCATE checkpoint after every purge
clears the WAL. Nothing in the file names a resident or a correspondent:

- rows are found by ``rtag``, a keyed HMAC of the pseudonym (``AtRest.tag``),
  not by the pseudonym; a contact by ``ctag`` (resident and contact id);
- bodies, attachment bytes, each contact (id, name, privileged) and each
  message's ``meta`` (contact id, privileged) are AES-GCM ciphertext, padded to
  a fixed size so the length does not tell legal mail from other mail;
- ids (random), directions, states, times and sizes stay readable, so the
  mailbox can be counted and purged by age without the key.

Schema version 2 (``PRAGMA user_version``, tables and records in
``_records``); version 1 databases (pseudonym, contact and flag in clear) are
converted on open by ``_migrate``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.sqlite import open_db
from services.messaging import _migrate
from services.messaging._crypto import AtRest
from services.messaging._docs import STATE_RANK, ContactsDoc
from services.messaging._records import VERSION, create_tables, seal_contact, seal_meta

log = structlog.get_logger("edge.messaging")
_CONTACTS_DOC = "contacts-doc"  # the sealed signed allowlist's associated data


class SchemaError(EdgeError):
    """mailbox.db was written by a newer edge than this one."""


class MailboxDB:
    """All mailbox reads and writes; one connection behind a lock (a tablet's volumes are small)."""

    def __init__(self, path: Path, crypto: AtRest):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.crypto = crypto
        self._lock = threading.RLock()
        self._conn = open_db(self.path, secure_delete=True)
        self._open_schema()
        for p in self.path.parent.glob(self.path.name + "*"):
            p.chmod(0o600)

    def _open_schema(self) -> None:
        with self.tx() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > VERSION:
                raise SchemaError(f"{self.path}: schema {version} is newer than this edge knows ({VERSION}); "
                                  "install the newer edge again, or restore its backup")
            if version < VERSION and _migrate.is_v1(c):
                carried = _migrate.v1_to_v2(c, self.crypto)  # same transaction: old schema or new, never half
                log.info("mailbox_schema_migrated", to=VERSION, **carried)
            create_tables(c)
            c.execute(f"PRAGMA user_version = {VERSION}")
        if self._q("SELECT 1 FROM meta WHERE key = 'vacuum_pending'"):
            self._rebuild()

    def _rebuild(self) -> None:
        """Rewrite the file without the pages the old schema left (then the WAL that held them)."""
        with self._lock:
            self._conn.execute("VACUUM")
            self._conn.execute("DELETE FROM meta WHERE key = 'vacuum_pending'")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: everything inside is stored, or nothing is."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _rtag(self, resident: str) -> bytes:
        return self.crypto.tag("resident", resident)

    def _open_json(self, blob: bytes, aad: str) -> dict[str, Any]:
        return json.loads(self.crypto.open(blob, aad))

    # -- contacts -------------------------------------------------------------

    def contacts_version(self) -> int:
        row = self._q("SELECT value FROM meta WHERE key = 'contacts_version'")
        return row[0][0] if row else 0

    def replace_contacts(self, doc: ContactsDoc, signed: bytes) -> None:
        """The allowlist of ``doc``; ``signed`` (the document as signed) is kept sealed beside it,
        to verify it again after a revocation or a restart."""
        with self.tx() as c:
            c.execute("DELETE FROM contacts")
            for entry in doc.residents:
                rtag = self._rtag(entry.resident)
                for contact in entry.contacts:
                    ctag, data = seal_contact(self.crypto, entry.resident, contact.id, contact.name,
                                              contact.privileged)
                    c.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?)", (rtag, ctag, data))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('contacts_version', ?)", (doc.version,))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('contacts_doc', ?)",
                      (self.crypto.seal(signed, _CONTACTS_DOC),))

    def contacts_document(self) -> bytes | None:
        """The signed allowlist the contacts came from; None when none is kept (an older edge kept none)."""
        row = self._q("SELECT value FROM meta WHERE key = 'contacts_doc'")
        return self.crypto.open(row[0][0], _CONTACTS_DOC) if row else None

    def drop_contacts(self) -> None:
        """No allowlist and no version floor: nobody writes to anyone until central's next one."""
        with self.tx() as c:
            c.execute("DELETE FROM contacts")
            c.execute("DELETE FROM meta WHERE key IN ('contacts_version', 'contacts_doc')")

    def _contact(self, resident: str, ctag: bytes, data: bytes) -> dict[str, Any]:
        record = self._open_json(data, f"contact:{resident}:{ctag.hex()}")
        return {"id": record["id"], "name": record["name"], "privileged": bool(record["privileged"])}

    def contacts(self, resident: str) -> list[dict[str, Any]]:
        rows = self._q("SELECT ctag, data FROM contacts WHERE rtag = ?", (self._rtag(resident),))
        return sorted((self._contact(resident, ctag, data) for ctag, data in rows), key=lambda c: c["id"])

    def contact(self, resident: str, contact_id: str) -> dict[str, Any] | None:
        ctag = self.crypto.tag("contact", resident, contact_id)
        row = self._q("SELECT data FROM contacts WHERE rtag = ? AND ctag = ?", (self._rtag(resident), ctag))
        return self._contact(resident, ctag, row[0][0]) if row else None

    def has_resident(self, resident: str) -> bool:
        return bool(self._q("SELECT 1 FROM contacts WHERE rtag = ? LIMIT 1", (self._rtag(resident),)))

    # -- messages -------------------------------------------------------------

    def insert_message(self, c: sqlite3.Connection, *, msg_id: str, resident: str, direction: str, contact: str,
                       privileged: bool, state: str, body: str, attachments: list[tuple[str, bytes]],
                       created: float | None = None) -> list[str]:
        """Insert inside ``tx()``; returns the attachment ids."""
        now, rtag = time.time(), self._rtag(resident)
        c.execute("INSERT INTO messages (id, rtag, direction, state, meta, body, created, updated)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                  (msg_id, rtag, direction, state, seal_meta(self.crypto, resident, msg_id, contact, privileged),
                   self.crypto.seal(body.encode(), f"body:{resident}:{msg_id}"), created or now, now))
        c.execute("INSERT INTO history VALUES (?, ?, NULL, ?)", (msg_id, state, now))
        ids = []
        for media_type, data in attachments:
            att_id = str(uuid.uuid4())
            c.execute("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
                      (att_id, msg_id, rtag, media_type, len(data),
                       self.crypto.seal(data, f"att:{resident}:{att_id}")))
            ids.append(att_id)
        return ids

    def exists(self, msg_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM messages WHERE id = ?", (msg_id,)))

    def set_event_seq(self, c: sqlite3.Connection, msg_id: str, seq: int) -> None:
        c.execute("UPDATE messages SET event_seq = ? WHERE id = ?", (seq, msg_id))

    def advance(self, msg_id: str, state: str, reason: str | None = None, direction: str = "out") -> str | None:
        """Move a message's state forward (never back); returns the state it had, or None if unchanged."""
        with self.tx() as c:
            row = c.execute("SELECT state FROM messages WHERE id = ? AND direction = ?", (msg_id, direction)).fetchone()
            if row is None or STATE_RANK[state] <= STATE_RANK[row[0]]:
                return None
            now = time.time()
            c.execute("UPDATE messages SET state = ?, reason = ?, updated = ? WHERE id = ?", (state, reason, now, msg_id))
            c.execute("INSERT INTO history VALUES (?, ?, ?, ?)", (msg_id, state, reason, now))
            return row[0]

    def queued(self) -> list[tuple[str, int]]:
        return self._q("SELECT id, event_seq FROM messages WHERE state = 'queued' AND event_seq IS NOT NULL")

    def mark_read(self, resident: str, msg_id: str) -> bool | None:
        """True if newly read, False if already, None if no such inbound message for this resident."""
        with self.tx() as c:
            row = c.execute("SELECT read_at FROM messages WHERE id = ? AND rtag = ? AND direction = 'in'",
                            (msg_id, self._rtag(resident))).fetchone()
            if row is None:
                return None
            if row[0] is not None:
                return False
            now = time.time()
            c.execute("UPDATE messages SET read_at = ?, state = 'read', updated = ? WHERE id = ?", (now, now, msg_id))
            c.execute("INSERT INTO history VALUES (?, 'read', NULL, ?)", (msg_id, now))
            return True

    def _listing(self, resident: str, where: str, args: tuple) -> list[dict[str, Any]]:
        rows = self._q("SELECT m.id, m.direction, m.meta, m.state, m.reason, m.created, m.read_at,"
                       " (SELECT COUNT(*) FROM attachments a WHERE a.message_id = m.id)"
                       f" FROM messages m WHERE rtag = ?{where} ORDER BY created", (self._rtag(resident), *args))
        out = []
        for msg_id, direction, meta, state, reason, created, read_at, atts in rows:
            m = self._open_json(meta, f"meta:{resident}:{msg_id}")
            out.append({"id": msg_id, "direction": direction, "contact": m["contact"],
                        "privileged": bool(m["privileged"]), "state": state, "reason": reason,
                        "created": created, "read_at": read_at, "attachments": atts})
        return out

    def list(self, resident: str) -> list[dict[str, Any]]:
        return self._listing(resident, "", ())

    def privileged(self, resident: str, msg_id: str) -> bool | None:
        """Whether this resident's message is legal mail; None when it is not theirs (or none)."""
        found = self._listing(resident, " AND id = ?", (msg_id,))
        return found[0]["privileged"] if found else None

    def get(self, resident: str, msg_id: str) -> dict[str, Any] | None:
        row = self._q("SELECT body FROM messages WHERE id = ? AND rtag = ?", (msg_id, self._rtag(resident)))
        if not row:
            return None
        meta = self._listing(resident, " AND id = ?", (msg_id,))[0]
        atts = self._q("SELECT id, media_type, size FROM attachments WHERE message_id = ? ORDER BY rowid", (msg_id,))
        hist = self._q("SELECT state, reason, at FROM history WHERE message_id = ? ORDER BY rowid", (msg_id,))
        return {**meta, "body": self.crypto.open(row[0][0], f"body:{resident}:{msg_id}").decode(),
                "attachments": [{"id": a, "media_type": t, "size": s} for a, t, s in atts],
                "history": [{"state": s, "reason": r, "at": at} for s, r, at in hist]}

    def attachment(self, resident: str, att_id: str) -> tuple[str, bytes, bool] | None:
        """(media type, bytes, whether its message is privileged), or None."""
        row = self._q("SELECT a.media_type, a.data, m.id, m.meta FROM attachments a JOIN messages m"
                      " ON m.id = a.message_id WHERE a.id = ? AND a.rtag = ?", (att_id, self._rtag(resident)))
        if not row:
            return None
        media_type, data, msg_id, meta = row[0]
        privileged = self._open_json(meta, f"meta:{resident}:{msg_id}")["privileged"]
        return media_type, self.crypto.open(data, f"att:{resident}:{att_id}"), bool(privileged)

    # -- purges and counts ----------------------------------------------------

    def _delete_messages(self, c: sqlite3.Connection, where: str, args: tuple) -> int:
        ids = [r[0] for r in c.execute(f"SELECT id FROM messages WHERE {where}", args).fetchall()]
        for msg_id in ids:
            c.execute("DELETE FROM attachments WHERE message_id = ?", (msg_id,))
            c.execute("DELETE FROM history WHERE message_id = ?", (msg_id,))
            c.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
        return len(ids)

    def purge_older_than(self, cutoff: float) -> int:
        with self.tx() as c:
            n = self._delete_messages(c, "created < ?", (cutoff,))
        if n:
            self._checkpoint()
        return n

    def purge_resident(self, resident: str) -> dict[str, int]:
        rtag = self._rtag(resident)
        with self.tx() as c:
            messages = self._delete_messages(c, "rtag = ?", (rtag,))
            contacts = c.execute("DELETE FROM contacts WHERE rtag = ?", (rtag,)).rowcount
        self._checkpoint()
        return {"messages": messages, "contacts": contacts}

    def _checkpoint(self) -> None:
        with self._lock:  # secure_delete zeroed the rows; this empties the WAL that still held them
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stats(self) -> dict[str, Any]:
        return {**counts(self._conn, self._lock), "contacts_version": self.contacts_version()}


def counts(conn: sqlite3.Connection, lock=None) -> dict[str, Any]:
    """What the mailbox holds, without the key (``edge messages stats`` reads a version 1 file too)."""
    with lock or threading.Lock():
        q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
        who = "rtag" if q("PRAGMA user_version")[0][0] >= VERSION else "resident"
        return {
            "residents": q(f"SELECT COUNT(DISTINCT {who}) FROM contacts")[0][0],
            "contacts": q("SELECT COUNT(*) FROM contacts")[0][0],
            "messages": q("SELECT COUNT(*) FROM messages")[0][0],
            "by_state": dict(q("SELECT direction || '.' || state, COUNT(*) FROM messages GROUP BY 1")),
            "attachments": q("SELECT COUNT(*) FROM attachments")[0][0],
            "unread": q("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND read_at IS NULL")[0][0],
            "oldest_created": q("SELECT MIN(created) FROM messages")[0][0],
        }
