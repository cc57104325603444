"""The mailbox database: per-resident messages, attachments and contacts, encrypted at rest.

SQLite in WAL mode with ``secure_delete`` on, so purged rows are overwritten
rather than left in free pages, and a TRUNCATE checkpoint after every purge
clears the WAL. Bodies, attachment bytes and contact names are stored only as
AES-GCM ciphertext (``AtRest``); ids, states and times stay readable so the
mailbox can be listed and counted without decrypting anything.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.messaging._crypto import AtRest
from services.messaging._docs import STATE_RANK, ContactsDoc

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (resident TEXT NOT NULL, id TEXT NOT NULL, name BLOB NOT NULL,
    privileged INTEGER NOT NULL, PRIMARY KEY (resident, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, resident TEXT NOT NULL, direction TEXT NOT NULL,
    contact TEXT NOT NULL, privileged INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT,
    body BLOB NOT NULL, created REAL NOT NULL, updated REAL NOT NULL, read_at REAL, event_seq INTEGER);
CREATE INDEX IF NOT EXISTS messages_resident ON messages(resident, created);
CREATE TABLE IF NOT EXISTS attachments (id TEXT PRIMARY KEY, message_id TEXT NOT NULL, resident TEXT NOT NULL,
    media_type TEXT NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments(message_id);
CREATE TABLE IF NOT EXISTS history (message_id TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS history_message ON history(message_id);
"""


class MailboxDB:
    """All mailbox reads and writes; one connection behind a lock (a tablet's volumes are small)."""

    def __init__(self, path: Path, crypto: AtRest):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.crypto = crypto
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = FULL", "secure_delete = ON", "busy_timeout = 5000"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.executescript(_SCHEMA)
        for p in self.path.parent.glob(self.path.name + "*"):
            p.chmod(0o600)

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

    # -- contacts -------------------------------------------------------------

    def contacts_version(self) -> int:
        row = self._q("SELECT value FROM meta WHERE key = 'contacts_version'")
        return row[0][0] if row else 0

    def replace_contacts(self, doc: ContactsDoc) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM contacts")
            for entry in doc.residents:
                for contact in entry.contacts:
                    c.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?, ?, ?)", (
                        entry.resident, contact.id,
                        self.crypto.seal(contact.name.encode(), f"contact:{entry.resident}:{contact.id}"),
                        int(contact.privileged)))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('contacts_version', ?)", (doc.version,))

    def contacts(self, resident: str) -> list[dict[str, Any]]:
        rows = self._q("SELECT id, name, privileged FROM contacts WHERE resident = ? ORDER BY id", (resident,))
        return [{"id": cid, "name": self.crypto.open(name, f"contact:{resident}:{cid}").decode(),
                 "privileged": bool(priv)} for cid, name, priv in rows]

    def contact(self, resident: str, contact_id: str) -> dict[str, Any] | None:
        return next((c for c in self.contacts(resident) if c["id"] == contact_id), None)

    def has_resident(self, resident: str) -> bool:
        return bool(self._q("SELECT 1 FROM contacts WHERE resident = ? LIMIT 1", (resident,)))

    # -- messages -------------------------------------------------------------

    def insert_message(self, c: sqlite3.Connection, *, msg_id: str, resident: str, direction: str, contact: str,
                       privileged: bool, state: str, body: str, attachments: list[tuple[str, bytes]],
                       created: float | None = None) -> list[str]:
        """Insert inside ``tx()``; returns the attachment ids."""
        now = time.time()
        c.execute("INSERT INTO messages (id, resident, direction, contact, privileged, state, body, created, updated)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (msg_id, resident, direction, contact, int(privileged), state,
                   self.crypto.seal(body.encode(), f"body:{resident}:{msg_id}"), created or now, now))
        c.execute("INSERT INTO history VALUES (?, ?, NULL, ?)", (msg_id, state, now))
        ids = []
        for media_type, data in attachments:
            att_id = str(uuid.uuid4())
            c.execute("INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
                      (att_id, msg_id, resident, media_type, len(data),
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
            row = c.execute("SELECT read_at FROM messages WHERE id = ? AND resident = ? AND direction = 'in'",
                            (msg_id, resident)).fetchone()
            if row is None:
                return None
            if row[0] is not None:
                return False
            now = time.time()
            c.execute("UPDATE messages SET read_at = ?, state = 'read', updated = ? WHERE id = ?", (now, now, msg_id))
            c.execute("INSERT INTO history VALUES (?, 'read', NULL, ?)", (msg_id, now))
            return True

    def list(self, resident: str) -> list[dict[str, Any]]:
        rows = self._q("SELECT m.id, m.direction, m.contact, m.privileged, m.state, m.reason, m.created, m.read_at,"
                       " (SELECT COUNT(*) FROM attachments a WHERE a.message_id = m.id)"
                       " FROM messages m WHERE resident = ? ORDER BY created", (resident,))
        keys = ("id", "direction", "contact", "privileged", "state", "reason", "created", "read_at", "attachments")
        return [dict(zip(keys, r, strict=True)) | {"privileged": bool(r[3])} for r in rows]

    def get(self, resident: str, msg_id: str) -> dict[str, Any] | None:
        row = self._q("SELECT body FROM messages WHERE id = ? AND resident = ?", (msg_id, resident))
        if not row:
            return None
        meta = next(m for m in self.list(resident) if m["id"] == msg_id)
        atts = self._q("SELECT id, media_type, size FROM attachments WHERE message_id = ? ORDER BY rowid", (msg_id,))
        hist = self._q("SELECT state, reason, at FROM history WHERE message_id = ? ORDER BY rowid", (msg_id,))
        return {**meta, "body": self.crypto.open(row[0][0], f"body:{resident}:{msg_id}").decode(),
                "attachments": [{"id": a, "media_type": t, "size": s} for a, t, s in atts],
                "history": [{"state": s, "reason": r, "at": at} for s, r, at in hist]}

    def attachment(self, resident: str, att_id: str) -> tuple[str, bytes, bool] | None:
        """(media type, bytes, whether its message is privileged), or None."""
        row = self._q("SELECT a.media_type, a.data, m.privileged FROM attachments a JOIN messages m"
                      " ON m.id = a.message_id WHERE a.id = ? AND a.resident = ?", (att_id, resident))
        if not row:
            return None
        return row[0][0], self.crypto.open(row[0][1], f"att:{resident}:{att_id}"), bool(row[0][2])

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
        with self.tx() as c:
            messages = self._delete_messages(c, "resident = ?", (resident,))
            contacts = c.execute("DELETE FROM contacts WHERE resident = ?", (resident,)).rowcount
        self._checkpoint()
        return {"messages": messages, "contacts": contacts}

    def _checkpoint(self) -> None:
        with self._lock:  # secure_delete zeroed the rows; this empties the WAL that still held them
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stats(self) -> dict[str, Any]:
        by_state = dict(self._q("SELECT direction || '.' || state, COUNT(*) FROM messages GROUP BY 1"))
        return {
            "residents": self._q("SELECT COUNT(DISTINCT resident) FROM contacts")[0][0],
            "contacts": self._q("SELECT COUNT(*) FROM contacts")[0][0],
            "contacts_version": self.contacts_version(),
            "messages": self._q("SELECT COUNT(*) FROM messages")[0][0],
            "by_state": by_state,
            "attachments": self._q("SELECT COUNT(*) FROM attachments")[0][0],
            "unread": self._q("SELECT COUNT(*) FROM messages WHERE direction = 'in' AND read_at IS NULL")[0][0],
        }
