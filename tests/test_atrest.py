"""edge.atrest: the one AES-GCM format at rest; what the gallery and the mailbox stored before still opens."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.atrest import AtRestCipher, NotAuthentic, sodium_available

KEY = bytes(range(32))
needs_sodium = pytest.mark.skipif(not sodium_available(), reason="libsodium has no AES-GCM on this CPU")
ENGINES = [pytest.param("sodium", marks=needs_sodium), "cryptography"]


def _old_seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    """What drivers/camera/gallery.py and services/messaging/_crypto.py wrote before edge.atrest."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def test_blobs_sealed_by_the_old_code_open_and_new_ones_keep_its_byte_layout():
    cipher = AtRestCipher(KEY)
    assert cipher.open(_old_seal(KEY, b"template", b"edge-gallery-v1:S-1"), b"edge-gallery-v1:S-1") == b"template"
    blob = cipher.seal(b"message body", b"msg-1|resident-a")
    assert len(blob) == 12 + len(b"message body") + 16  # nonce || ciphertext || tag
    assert AESGCM(KEY).decrypt(blob[:12], blob[12:], b"msg-1|resident-a") == b"message body"
    assert cipher.seal(b"x", b"a")[:12] != cipher.seal(b"x", b"a")[:12]  # a fresh nonce every time


@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_write_the_same_bytes_and_open_each_others(engine):
    ours, other = AtRestCipher(KEY, engine=engine), AtRestCipher(KEY, engine="cryptography")
    data, aad = os.urandom(512), b"edge-gallery-v1:S-1"
    blob = ours.seal(data, aad)
    nonce = blob[:12]
    assert blob[12:] == AESGCM(KEY).encrypt(nonce, data, aad)  # what cryptography writes under that nonce
    assert other.open(blob, aad) == data and ours.open(other.seal(data, aad), aad) == data
    assert ours.engine == engine


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("tamper", ["other record", "flipped bit", "truncated", "other key"])
def test_a_blob_opens_only_for_its_own_record_unchanged_under_its_key(tamper, engine):
    blob, aad, key = AtRestCipher(KEY, engine=engine).seal(b"secret", b"S-1"), b"S-1", KEY
    if tamper == "other record":
        aad = b"S-2"
    elif tamper == "flipped bit":
        blob = blob[:-1] + bytes([blob[-1] ^ 1])
    elif tamper == "truncated":
        blob = blob[:20]
    else:
        key = bytes(32)
    with pytest.raises(NotAuthentic):
        AtRestCipher(key, engine=engine).open(blob, aad)
    cipher = AtRestCipher(KEY, engine=engine)
    assert cipher.open(cipher.seal(b"secret", b"S-1"), b"S-1") == b"secret"  # control


def test_a_gallery_template_and_a_mailbox_field_written_the_old_way_still_open(tmp_path):
    from drivers.camera.gallery import _AAD, Gallery, load_or_create_key
    from services.messaging._crypto import AtRest

    gallery = Gallery(tmp_path)
    key = load_or_create_key(tmp_path)
    raw = bytes(range(256)) * 2
    assert gallery._open("S-1", _old_seal(key, raw, _AAD + b"S-1")) == raw
    assert gallery.open_blob(_old_seal(key, b"crop", _AAD + b"audit/x"), b"audit/x") == b"crop"
    gallery.close()
    assert AtRest(KEY).open(_old_seal(KEY, b"hello", b"m1|r1"), "m1|r1") == b"hello"


def test_the_key_must_be_256_bits_and_the_engine_known():
    with pytest.raises(ValueError, match="32 bytes"):
        AtRestCipher(bytes(16))
    with pytest.raises(ValueError, match="unknown AES-GCM engine"):
        AtRestCipher(KEY, engine="rot13")


@needs_sodium
def test_the_gallery_seals_opens_and_syncs_without_loading_cryptography(tmp_path):
    """cryptography costs each gate process about 8 MB resident (docs/performance.md, footprint --role gate)."""
    code = ("import sys, struct; from drivers.camera.gallery import Gallery, Subject; g = Gallery(sys.argv[1]); "
            "g.upsert(Subject('s1', 'staff', [struct.pack('<128f', *([0.1] * 128))])); "
            "assert [s.subject_id for s in g.subjects()] == ['s1'] and len(g.subjects()[0].templates[0]) == 512; "
            "assert g.open_blob(g.seal_blob(b'crop', b'c'), b'c') == b'crop'; import drivers.camera.sync; "
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
