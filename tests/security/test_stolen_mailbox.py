"""Issue 17, part 4 (keys apart from data): a stolen mailbox.db, without the secrets folder, names nobody.

The attacker copies the tablet's ``messaging/`` folder (database, WAL, shm) from a
running tablet and again after it stopped, but not ``secrets/``. They read every
byte and every cell, and try the residents' pseudonyms through unkeyed hashes.
Positive control: the same tools, given ``secrets/mailbox.key`` as well, find
the resident and their legal correspondent in the same copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3

import pytest

from edge.testing.wait import wait_for
from services.messaging._crypto import AtRest
from tests._messaging_helpers import OTHER, RESIDENT, Central, topic
from tests.test_messaging_daemon import _start

# What identifies a resident or a correspondent (Central.contacts: c-mum "Mum", c-lawyer "J. Counsel",
# c-bro "Brother"); "Mum" is left out only because three bytes turn up in ciphertext by chance.
NEEDLES = [RESIDENT, OTHER, "c-lawyer", "J. Counsel", "c-mum", "c-bro", "Brother"]


@pytest.fixture
def central(tmp_path):
    return Central(tmp_path)


@pytest.fixture
def publisher(mosquitto):
    from services.learning._link import StandaloneLink

    link = StandaloneLink(mosquitto.uri, client_id="central").start()
    yield link
    link.stop()


def _steal(folder, loot):
    loot.mkdir()
    for name in ("mailbox.db", "mailbox.db-wal", "mailbox.db-shm"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, loot / name)
    return loot


def _cells(loot) -> list[tuple[str, str, object]]:
    """Every (table, column, value) the copy holds, read as SQLite would (WAL applied)."""
    conn = sqlite3.connect(loot / "mailbox.db")  # the thief's own copy: recovering its WAL is fine
    try:
        out = []
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cur = conn.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cur.description]
            out += [(table, n, v) for row in cur for n, v in zip(names, row, strict=True)]
        return out
    finally:
        conn.close()


def _as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _guesses(pseudonym: str) -> list[bytes]:
    """Unkeyed digests a careless index would use: raw and hex, whole and truncated."""
    out = []
    for algo in ("sha256", "sha1", "md5", "blake2b", "sha512"):
        digest = hashlib.new(algo, pseudonym.encode()).digest()
        out += [digest, digest[:16], digest.hex().encode(), digest.hex()[:16].encode()]
    return out


def _thief_without_key(loot) -> list[str]:
    """What the copy gives away: '<where>: <what>' for each finding."""
    found = [f"{p.name}: {n}" for p in loot.iterdir() for n in NEEDLES if n.encode() in p.read_bytes()]
    cells = _cells(loot)
    found += [f"{t}.{c}: {n}" for t, c, v in cells for n in NEEDLES if n.encode() in _as_bytes(v)]
    found += [f"{t}.{c}: hash of {who}" for who in (RESIDENT, OTHER) for g in _guesses(who)
              for t, c, v in cells if g in _as_bytes(v)]
    found += [f"clear column {t}.{c}" for t, c, _ in cells if c in ("resident", "contact", "privileged")]
    return sorted(set(found))


def _thief_with_key(loot, key: bytes) -> dict:
    """Positive control: with mailbox.key, guessing pseudonyms finds them and opens their contacts."""
    crypto, cells = AtRest(key), _cells(loot)
    rtags = {v for t, c, v in cells if c == "rtag"}
    known = {who for who in (RESIDENT, OTHER, "res-nobody") if crypto.tag("resident", who) in rtags}
    conn = sqlite3.connect(loot / "mailbox.db")
    rows = conn.execute("SELECT ctag, data FROM contacts WHERE rtag = ?", (crypto.tag("resident", RESIDENT),))
    contacts = [json.loads(crypto.open(d, f"contact:{RESIDENT}:{t.hex()}")) for t, d in rows]
    conn.close()
    return {"residents": known, "legal": [c["name"] for c in contacts if c["privileged"]]}


def test_a_stolen_mailbox_without_the_key_names_no_resident_and_no_legal_correspondent(
        tmp_path, mosquitto, edge_daemon, central, publisher):
    tablet = _start(edge_daemon, mosquitto, central, publisher)
    for contact, body in (("c-mum", "See you Sunday"), ("c-lawyer", "About my appeal")):
        assert tablet.api("POST", "/v1/messaging/messages", {"contact": contact, "body": body})[0] == 201
    legal_id, legal = central.inbound("Privileged: hearing moved", contact="c-lawyer", privileged=True)
    bro_id, bro = central.inbound("Hi from your brother", resident=OTHER, contact="c-bro")
    publisher.publish(topic("in"), legal)
    publisher.publish(topic("in"), bro)
    wait_for(lambda: tablet.api("GET", f"/v1/messaging/messages/{legal_id}")[0] == 200
             and tablet.api("GET", f"/v1/messaging/messages/{bro_id}", resident=OTHER)[0] == 200,
             what="both inbound messages stored", timeout=45)
    listing = tablet.api("GET", "/v1/messaging/messages")[1]["messages"]
    assert sorted((m["contact"], m["privileged"]) for m in listing) == [
        ("c-lawyer", True), ("c-lawyer", True), ("c-mum", False)]  # the tablet itself still knows

    state = tablet.daemon.state_dir
    live = _steal(state / "messaging", tmp_path / "live")  # WAL and shm as they are while running
    assert (live / "mailbox.db-wal").stat().st_size > 0
    assert tablet.daemon.stop() == 0, tablet.daemon.log_tail()
    cold = _steal(state / "messaging", tmp_path / "cold")
    key = (state / "secrets" / "mailbox.key").read_bytes()

    for loot in (live, cold):
        assert _thief_without_key(loot) == [], loot.name
        # The flag is not even in the length: every message's sealed meta is the same size.
        assert len({len(v) for t, c, v in _cells(loot) if (t, c) == ("messages", "meta")}) == 1
        # Positive control: the same copy, with the key beside it, gives both up.
        assert _thief_with_key(loot, key) == {"residents": {RESIDENT, OTHER}, "legal": ["J. Counsel"]}
    # And the thief's search does see a pseudonym where one is in clear (a file of this test's).
    (cold / "note.txt").write_text(f"cell 3: {RESIDENT}")
    assert _thief_without_key(cold) == [f"note.txt: {RESIDENT}"]
