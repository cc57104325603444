"""Mailbox building blocks on real files: encryption, attachments, states, retention, documents."""

from __future__ import annotations

import json
import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge import signing
from services.messaging._attachments import AttachmentRefused, check_one, sniff
from services.messaging._crypto import (
    AtRest,
    CryptoError,
    load_or_create_key,
    load_seal_public_key,
    open_sealed,
    seal_to,
)
from services.messaging._db import MailboxDB
from services.messaging._docs import CentralMessageRefused, ContactsDoc, StatusDoc, parse_central
from tests._messaging_helpers import DEVICE, RESIDENT, SITE, Central
from tests.conftest import FACES


@pytest.fixture
def central(tmp_path):
    return Central(tmp_path)


@pytest.fixture
def db(tmp_path, central):
    box = MailboxDB(tmp_path / "m" / "mailbox.db", AtRest(load_or_create_key(tmp_path / "m")))
    raw = central.contacts(seal=False)
    box.replace_contacts(parse_central(raw, ContactsDoc, _trusted(central), DEVICE, SITE), raw)
    yield box
    box.close()


def _trusted(central):
    return signing.load_public_keys([central.pub])


def test_key_file_is_private_and_refused_when_readable(tmp_path):
    path = tmp_path / "secrets" / "mailbox.key"  # in the secrets folder, not beside the mailbox
    key = load_or_create_key(tmp_path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_key(tmp_path) == key
    path.chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_or_create_key(tmp_path)


def test_ciphertext_is_bound_to_its_record():
    box = AtRest(os.urandom(32))
    blob = box.seal(b"hello", "body:r1:m1")
    assert box.open(blob, "body:r1:m1") == b"hello"
    with pytest.raises(CryptoError):
        box.open(blob, "body:r2:m1")  # moved to another resident's record


def test_sealed_for_central_opens_only_with_its_key(central):
    sealed = seal_to(load_seal_public_key(central.seal_pub), b"secret", aad="m1")
    assert open_sealed(central.seal_private, sealed, aad="m1") == b"secret"
    with pytest.raises(CryptoError):
        open_sealed(X25519PrivateKey.generate(), sealed, aad="m1")
    with pytest.raises(CryptoError):
        open_sealed(central.seal_private, sealed, aad="m2")  # sealed for another message


def test_attachment_types_by_magic_bytes():
    photo = (FACES / "biden_1.jpg").read_bytes()
    assert sniff(photo) == "image/jpeg"
    assert check_one("image/jpeg", photo, ["image/jpeg"], 1024 * 1024) == "image/jpeg"
    with pytest.raises(AttachmentRefused, match="limit"):
        check_one("image/jpeg", photo, ["image/jpeg"], 1024)
    with pytest.raises(AttachmentRefused, match="not allowed"):
        check_one("image/gif", b"GIF89a....", ["image/jpeg"], 1024)
    with pytest.raises(AttachmentRefused, match="not a recognised image"):
        check_one("image/jpeg", b"%PDF-1.7", ["image/jpeg"], 1024)


def _outbound(db, msg_id="m-1", created=None):
    with db.tx() as c:
        db.insert_message(c, msg_id=msg_id, resident=RESIDENT, direction="out", contact="c-mum", privileged=False,
                          state="queued", body="hello", attachments=[], created=created)


def test_states_only_move_forward(db):
    _outbound(db)
    assert db.advance("m-1", "sent") == "queued"
    assert db.advance("m-1", "approved") == "sent"
    assert db.advance("m-1", "received") is None  # late, out of order
    assert db.advance("m-1", "rejected", "other") is None  # approved and rejected exclude each other
    assert db.advance("nope", "sent") is None
    assert [h["state"] for h in db.get(RESIDENT, "m-1")["history"]] == ["queued", "sent", "approved"]


def test_a_failed_event_append_stores_nothing(db):
    with pytest.raises(RuntimeError):
        with db.tx() as c:
            db.insert_message(c, msg_id="m-2", resident=RESIDENT, direction="out", contact="c-mum",
                              privileged=False, state="queued", body="x", attachments=[("image/png", b"\x89PNG")])
            raise RuntimeError("store full")
    assert not db.exists("m-2") and db.stats()["attachments"] == 0


def test_retention_purges_old_messages_only(db):
    _outbound(db, "old", created=time.time() - 40 * 86400)
    _outbound(db, "new")
    assert db.purge_older_than(time.time() - 30 * 86400) == 1
    assert not db.exists("old") and db.exists("new")


def test_contacts_documents_are_verified(central):
    trusted = _trusted(central)
    doc = json.loads(central.contacts(seal=False))
    doc["residents"][0]["contacts"].append({"id": "c-evil", "name": "Added later"})
    with pytest.raises(CentralMessageRefused, match="bad signature"):
        parse_central(json.dumps(doc).encode(), ContactsDoc, trusted, DEVICE, SITE)
    with pytest.raises(CentralMessageRefused, match="addressed to device"):
        parse_central(central.contacts(seal=False), ContactsDoc, trusted, "tab-other", SITE)
    unsigned = {k: v for k, v in json.loads(central.status("m", "approved")).items() if k != "signatures"}
    with pytest.raises(CentralMessageRefused, match="not signed"):
        parse_central(json.dumps(unsigned).encode(), StatusDoc, trusted, DEVICE)
    with pytest.raises(CentralMessageRefused, match="needs a reason"):
        parse_central(central.status("m", "rejected"), StatusDoc, trusted, DEVICE)
