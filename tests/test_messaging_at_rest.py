"""Issue 17, keys apart from data: mailbox.db names no resident, no correspondent, no legal mail.

Planted pseudonyms, contact ids and names are searched for in every byte of the
mailbox folder (db, WAL, shm); a database written by schema 1 (its DDL copied
below as it shipped) is converted on open, atomically (kill -9 mid-way), and
keeps every message readable by its resident only.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from edge import signing
from services.messaging._crypto import AtRest
from services.messaging._db import MailboxDB
from services.messaging._docs import ContactsDoc, parse_central
from services.messaging.component import stats_from_disk
from tests._messaging_helpers import DEVICE, SITE, Central
from tests.conftest import FACES, REPO

ALICE, BOB = "res-PLANTEDalice9", "res-PLANTEDbob77"
LAWYER, MUM, BRO = "c-PLANTEDlawyer", "c-PLANTEDmum", "c-PLANTEDbro"
NAMES = {LAWYER: "Ms Plantedcounsel Esq", MUM: "Plantedmum Smith", BRO: "Plantedbrother Jones"}
NEEDLES = [s.encode() for s in (ALICE, BOB, LAWYER, MUM, BRO, *NAMES.values())]
PHOTO = (FACES / "biden_1.jpg").read_bytes()

# Schema 1 exactly as it shipped (the mailbox before schema versions): the fixture
# the migration starts from.
V1_DDL = """
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
CLEAR_COLUMNS = {"resident", "contact", "privileged", "name"}


def found(folder, needles=NEEDLES) -> list[str]:
    """Every needle in every byte of every file of the mailbox folder: '<file>: <needle>'."""
    return [f"{p.name}: {n.decode()}" for p in sorted(folder.iterdir()) if p.is_file()
            for n in needles if n in p.read_bytes()]


def columns(path) -> set[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {r[1] for t in tables for r in conn.execute(f"PRAGMA table_info({t})")}
    finally:
        conn.close()


@pytest.fixture
def key():
    return os.urandom(32)


def _contacts(tmp_path) -> tuple[ContactsDoc, bytes]:
    central = Central(tmp_path / "central")
    raw = central.contacts(version=3, seal=False, residents={
        ALICE: [{"id": MUM, "name": NAMES[MUM]}, {"id": LAWYER, "name": NAMES[LAWYER], "privileged": True}],
        BOB: [{"id": BRO, "name": NAMES[BRO]}]})
    return parse_central(raw, ContactsDoc, signing.load_public_keys([central.pub]), DEVICE, SITE), raw


def _plant(box: MailboxDB, tmp_path) -> dict[str, str]:
    box.replace_contacts(*_contacts(tmp_path))
    ids = {}
    for name, resident, direction, contact, privileged, atts in (
            ("to_mum", ALICE, "out", MUM, False, []),
            ("legal", ALICE, "in", LAWYER, True, [("image/jpeg", PHOTO)]),
            ("to_bro", BOB, "out", BRO, False, [])):
        ids[name] = str(uuid.uuid4())
        with box.tx() as c:
            box.insert_message(c, msg_id=ids[name], resident=resident, direction=direction, contact=contact,
                               privileged=privileged, state="queued" if direction == "out" else "delivered",
                               body=f"body of {name}", attachments=atts)
    return ids


def test_no_pseudonym_contact_or_legal_flag_is_readable_from_the_mailbox_files(tmp_path, key):
    folder = tmp_path / "messaging"
    box = MailboxDB(folder / "mailbox.db", AtRest(key))
    ids = _plant(box, tmp_path)
    assert box.list(ALICE)[1]["privileged"] is True and box.contact(ALICE, LAWYER)["name"] == NAMES[LAWYER]
    assert (folder / "mailbox.db-wal").stat().st_size > 0  # the search below covers a live WAL
    assert found(folder) == []
    assert columns(folder / "mailbox.db").isdisjoint(CLEAR_COLUMNS)
    # The flag is sealed with the contact id, padded: legal mail's record is as long as any other.
    conn = sqlite3.connect(f"file:{folder / 'mailbox.db'}?mode=ro", uri=True)
    sizes = dict(conn.execute("SELECT id, length(meta) FROM messages"))
    contact_sizes = {n for (n,) in conn.execute("SELECT length(data) FROM contacts")}
    conn.close()
    assert sizes[ids["legal"]] == sizes[ids["to_mum"]] == sizes[ids["to_bro"]] and len(contact_sizes) == 1
    box.close()
    assert found(folder) == []  # and after the last close has checkpointed the WAL
    # Positive control: the same search over a schema 1 file finds every pseudonym and contact id
    # (schema 1 already sealed the names).
    hits = {h.split(": ")[1] for h in found(_v1_mailbox(tmp_path / "v1", key)[0].parent)}
    assert hits == {ALICE, BOB, LAWYER, MUM, BRO}


def test_release_purge_and_read_receipts_work_by_keyed_tag(tmp_path, key):
    box = MailboxDB(tmp_path / "mailbox.db", AtRest(key))
    ids = _plant(box, tmp_path)
    assert box.mark_read(BOB, ids["legal"]) is None  # another resident's message: as if absent
    assert box.mark_read(ALICE, ids["legal"]) is True and box.mark_read(ALICE, ids["legal"]) is False
    assert box.has_resident(ALICE) and not box.has_resident("res-nobody")
    assert box.purge_resident(ALICE) == {"messages": 2, "contacts": 2}
    assert box.list(ALICE) == [] and box.contacts(ALICE) == [] and not box.has_resident(ALICE)
    assert [m["id"] for m in box.list(BOB)] == [ids["to_bro"]] and box.contacts(BOB)[0]["id"] == BRO
    assert box.stats()["residents"] == 1
    box.close()


def test_a_moved_record_does_not_open_for_another_resident(tmp_path, key):
    """Copying Alice's rtag onto Bob's row (file access, no key) gives Alice an unreadable row, not Bob's mail."""
    box = MailboxDB(tmp_path / "mailbox.db", AtRest(key))
    ids = _plant(box, tmp_path)
    with box.tx() as c:
        c.execute("UPDATE messages SET rtag = (SELECT rtag FROM messages WHERE id = ?) WHERE id = ?",
                  (ids["to_mum"], ids["to_bro"]))
    with pytest.raises(Exception, match="does not authenticate"):
        box.get(ALICE, ids["to_bro"])
    box.close()


# -- schema 1 -> 2 ------------------------------------------------------------

def _v1_mailbox(folder, key):
    """A schema 1 mailbox as the old daemon left it at a crash: rows still in the WAL, plus a copy of
    what it holds: {msg name: (id, resident, contact, privileged, body)}."""
    folder.mkdir(parents=True)
    live = folder / "live"
    live.mkdir()
    crypto, now = AtRest(key), time.time()
    conn = sqlite3.connect(live / "mailbox.db", isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = FULL", "secure_delete = ON"):
        conn.execute(f"PRAGMA {pragma}")
    conn.executescript(V1_DDL)
    for resident, cid, priv in ((ALICE, MUM, 0), (ALICE, LAWYER, 1), (BOB, BRO, 0)):
        conn.execute("INSERT INTO contacts VALUES (?, ?, ?, ?)",
                     (resident, cid, crypto.seal(NAMES[cid].encode(), f"contact:{resident}:{cid}"), priv))
    conn.execute("INSERT INTO meta VALUES ('contacts_version', 3)")
    rows = {"to_mum": (ALICE, "out", MUM, 0, "sent", 7, None), "legal": (ALICE, "in", LAWYER, 1, "read", None, now),
            "to_bro": (BOB, "out", BRO, 0, "queued", 9, None), "from_bro": (BOB, "in", BRO, 0, "delivered", None, None)}
    held = {}
    for n, (name, (resident, direction, contact, priv, state, seq, read_at)) in enumerate(rows.items()):
        msg_id, body = str(uuid.uuid4()), f"old body of {name}"
        conn.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
                     (msg_id, resident, direction, contact, priv, state,
                      crypto.seal(body.encode(), f"body:{resident}:{msg_id}"), now - 100 + n, now, read_at, seq))
        conn.execute("INSERT INTO history VALUES (?, ?, NULL, ?)", (msg_id, state, now))
        held[name] = (msg_id, resident, contact, bool(priv), body)
    att_id = str(uuid.uuid4())
    conn.execute("INSERT INTO attachments VALUES (?, ?, ?, 'image/jpeg', ?, ?)",
                 (att_id, held["legal"][0], ALICE, len(PHOTO), crypto.seal(PHOTO, f"att:{ALICE}:{att_id}")))
    held["att"] = att_id
    for suffix in ("", "-wal", "-shm"):  # a copy while the writer is open: its WAL still holds the rows
        (folder / f"mailbox.db{suffix}").write_bytes((live / f"mailbox.db{suffix}").read_bytes())
    conn.close()
    for p in live.iterdir():
        p.unlink()
    live.rmdir()
    return folder / "mailbox.db", held


def _check_migrated(box: MailboxDB, held: dict) -> None:
    for name in ("to_mum", "legal", "to_bro", "from_bro"):
        msg_id, resident, contact, privileged, body = held[name]
        other = BOB if resident == ALICE else ALICE
        got = box.get(resident, msg_id)
        assert (got["body"], got["contact"], got["privileged"]) == (body, contact, privileged), name
        assert box.get(other, msg_id) is None, f"{other} reads {name}"
    assert {m["id"] for m in box.list(ALICE)} == {held["to_mum"][0], held["legal"][0]}
    assert [m["state"] for m in box.list(BOB)] == ["queued", "delivered"]  # order by created kept
    assert box.get(ALICE, held["legal"][0])["read_at"] is not None
    assert box.attachment(ALICE, held["att"]) == ("image/jpeg", PHOTO, True)
    assert box.attachment(BOB, held["att"]) is None
    assert box.contacts(ALICE) == [{"id": LAWYER, "name": NAMES[LAWYER], "privileged": True},
                                   {"id": MUM, "name": NAMES[MUM], "privileged": False}]
    assert box.contacts(BOB) == [{"id": BRO, "name": NAMES[BRO], "privileged": False}]
    assert box.contacts_version() == 3 and box.queued() == [(held["to_bro"][0], 9)]  # its event seq kept
    assert box.stats() | {"oldest_created": None} == {
        "residents": 2, "contacts": 3, "messages": 4, "attachments": 1, "unread": 1, "contacts_version": 3,
        "by_state": {"out.sent": 1, "in.read": 1, "out.queued": 1, "in.delivered": 1}, "oldest_created": None}


def test_a_schema_1_mailbox_is_converted_on_open_and_nothing_is_lost(tmp_path, key):
    path, held = _v1_mailbox(tmp_path / "messaging", key)
    assert {n.split(": ")[0] for n in found(path.parent)} >= {"mailbox.db-wal"}  # positive control
    assert stats_from_disk(tmp_path)["residents"] == 2  # `edge messages stats` before the daemon converts it
    box = MailboxDB(path, AtRest(key))
    _check_migrated(box, held)
    assert found(path.parent) == [], "old plaintext left in the db, its free pages or the WAL"
    assert columns(path).isdisjoint(CLEAR_COLUMNS)
    assert box.mark_read(BOB, held["from_bro"][0]) is True and box.mark_read(ALICE, held["from_bro"][0]) is None
    box.close()
    assert stats_from_disk(tmp_path) | {"oldest_age_days": None} == {
        "residents": 2, "contacts": 3, "messages": 4, "attachments": 1, "unread": 0, "oldest_age_days": None,
        "by_state": {"out.sent": 1, "in.read": 2, "out.queued": 1}}
    box = MailboxDB(path, AtRest(key))  # opened again: converted once, nothing changes
    assert box.get(ALICE, held["legal"][0])["body"] == held["legal"][4] and box.stats()["messages"] == 4
    assert box.purge_resident(BOB) == {"messages": 2, "contacts": 1} and box.list(BOB) == []
    box.close()
    assert found(path.parent) == []


_CRASHING_OPEN = """
import os, signal, sys
from pathlib import Path
from services.messaging import _db, _records
from services.messaging._crypto import AtRest
where, path, key = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]).read_bytes()
calls = []
if where == "mid":  # the contacts are converted and the old tables renamed when the 2nd message is sealed
    real = _records.seal_meta
    def seal_meta(*a):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a)
    _records.seal_meta = seal_meta
else:  # committed, not yet rebuilt
    _db.MailboxDB._rebuild = lambda self: os.kill(os.getpid(), signal.SIGKILL)
_db.MailboxDB(path, AtRest(key))
"""


@pytest.mark.parametrize("where", ["mid", "before_rebuild"])
def test_a_crash_during_the_conversion_leaves_the_old_schema_or_the_new(tmp_path, key, where):
    path, held = _v1_mailbox(tmp_path / "messaging", key)
    (tmp_path / "key").write_bytes(key)
    crash = subprocess.run([sys.executable, "-c", textwrap.dedent(_CRASHING_OPEN), where, str(path),
                            str(tmp_path / "key")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    conn = sqlite3.connect(path, isolation_level=None)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if where == "mid":  # rolled back: schema 1 whole, every row still there
        assert version == 0 and "v1_messages" not in tables and "resident" in columns(path)
        assert conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 4
    else:  # committed: schema 2, the rebuild still owed
        assert version == 2 and conn.execute("SELECT value FROM meta WHERE key = 'vacuum_pending'").fetchone()
    conn.close()
    box = MailboxDB(path, AtRest(key))  # the next start finishes the job
    _check_migrated(box, held)
    assert found(path.parent) == []
    box.close()
