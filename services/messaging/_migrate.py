"""Mailbox schema 1 -> 2: the pseudonym, contact and privileged flag leave the file's clear columns.

Version 1 kept ``resident`` in every table, and ``contact`` and ``privileged``
beside each message, in clear. The conversion runs inside the caller's
transaction (``MailboxDB._open_schema``), so a crash leaves the old schema or
the new one, never a mix; bodies and attachments keep their ciphertext (their
associated data already named the resident and the record, and still does).
It leaves ``vacuum_pending`` in ``meta``: the caller then rebuilds the file, so
no page of the old tables survives in free space or in the WAL.
"""

from __future__ import annotations

import sqlite3

from services.messaging import _records
from services.messaging._crypto import AtRest


def is_v1(c: sqlite3.Connection) -> bool:
    """A database written before schema versions: its messages table has a clear ``resident`` column."""
    return any(row[1] == "resident" for row in c.execute("PRAGMA table_info(messages)"))


def v1_to_v2(c: sqlite3.Connection, crypto: AtRest) -> dict[str, int]:
    """Convert in place, inside the open transaction; returns the rows carried over per table."""
    # Row by row through SQL functions: attachments are copied inside SQLite, never all held in memory.
    c.create_function("edge_rtag", 1, lambda resident: crypto.tag("resident", resident))
    c.create_function("edge_meta", 4, lambda resident, msg_id, contact, privileged: _records.seal_meta(
        crypto, resident, msg_id, contact, bool(privileged)))
    for table in ("contacts", "messages", "attachments"):
        c.execute(f"ALTER TABLE {table} RENAME TO v1_{table}")
    c.execute("DROP INDEX IF EXISTS messages_resident")
    c.execute("DROP INDEX IF EXISTS attachments_message")
    _records.create_tables(c)
    # The contact's name is decrypted (its old associated data named the contact id) and sealed
    # again together with the id and the flag.
    for resident, cid, name, privileged in c.execute("SELECT resident, id, name, privileged FROM v1_contacts"):
        plain = crypto.open(name, f"contact:{resident}:{cid}").decode()
        ctag, data = _records.seal_contact(crypto, resident, cid, plain, bool(privileged))
        c.execute("INSERT INTO contacts VALUES (?, ?, ?)", (crypto.tag("resident", resident), ctag, data))
    c.execute("INSERT INTO messages (id, rtag, direction, state, reason, meta, body, created, updated, read_at,"
              " event_seq) SELECT id, edge_rtag(resident), direction, state, reason,"
              " edge_meta(resident, id, contact, privileged), body, created, updated, read_at, event_seq"
              " FROM v1_messages")
    c.execute("INSERT INTO attachments (id, message_id, rtag, media_type, size, data)"
              " SELECT id, message_id, edge_rtag(resident), media_type, size, data FROM v1_attachments")
    carried = {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("contacts", "messages", "attachments")}
    for table in ("contacts", "messages", "attachments"):
        old = c.execute(f"SELECT COUNT(*) FROM v1_{table}").fetchone()[0]
        if old != carried[table]:  # cannot happen with these statements; refuse rather than lose mail
            raise sqlite3.DatabaseError(f"mailbox migration: {table}: {old} rows before, {carried[table]} after")
        c.execute(f"DROP TABLE v1_{table}")
    c.execute("INSERT OR REPLACE INTO meta VALUES ('vacuum_pending', 1)")
    return carried
