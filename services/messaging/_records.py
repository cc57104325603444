"""The mailbox's schema 2 and its sealed records, shared by the database and its migration.

A contact (id, name, privileged) and a message's meta (contact id, privileged)
are sealed whole, as JSON padded to a fixed size: the ciphertext's length says
nothing about who the record names or whether it is legal mail.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from services.messaging._crypto import AtRest

VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contacts (rtag BLOB NOT NULL, ctag BLOB NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (rtag, ctag)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, rtag BLOB NOT NULL, direction TEXT NOT NULL,
    state TEXT NOT NULL, reason TEXT, meta BLOB NOT NULL, body BLOB NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, read_at REAL, event_seq INTEGER);
CREATE INDEX IF NOT EXISTS messages_rtag ON messages(rtag, created);
CREATE TABLE IF NOT EXISTS attachments (id TEXT PRIMARY KEY, message_id TEXT NOT NULL, rtag BLOB NOT NULL,
    media_type TEXT NOT NULL, size INTEGER NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS attachments_message ON attachments(message_id);
CREATE TABLE IF NOT EXISTS history (message_id TEXT NOT NULL, state TEXT NOT NULL, reason TEXT, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS history_message ON history(message_id);
"""
# Sealed records are padded to these sizes (ids <= 128, names <= 120 characters: one block in practice).
_META_BLOCK, _CONTACT_BLOCK = 192, 768


def pad(record: dict[str, Any], block: int) -> bytes:
    """JSON padded with spaces (still valid JSON) to a multiple of ``block`` bytes."""
    raw = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % block)


def seal_meta(crypto: AtRest, resident: str, msg_id: str, contact: str, privileged: bool) -> bytes:
    return crypto.seal(pad({"contact": contact, "privileged": int(privileged)}, _META_BLOCK),
                       f"meta:{resident}:{msg_id}")


def seal_contact(crypto: AtRest, resident: str, contact_id: str, name: str, privileged: bool) -> tuple[bytes, bytes]:
    """(ctag, data) of one contact on one resident's allowlist."""
    ctag = crypto.tag("contact", resident, contact_id)
    record = pad({"id": contact_id, "name": name, "privileged": int(privileged)}, _CONTACT_BLOCK)
    return ctag, crypto.seal(record, f"contact:{resident}:{ctag.hex()}")


def create_tables(c: sqlite3.Connection) -> None:
    """The schema, inside the caller's transaction (executescript would COMMIT it first)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            c.execute(statement)
