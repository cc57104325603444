"""Raw Curve25519 keys out of PEM without cryptography, and the lazy import it buys."""

import subprocess
import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge import signing
from edge.pem import raw_public_key
from services.messaging._crypto import CryptoError, load_seal_public_key


def _pem(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _raw(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize("algorithm, make", [("ed25519", Ed25519PrivateKey), ("x25519", X25519PrivateKey)])
def test_raw_key_matches_cryptography(algorithm, make):
    for _ in range(20):
        key = make.generate()
        assert raw_public_key(_pem(key), algorithm) == _raw(key)
        other = "x25519" if algorithm == "ed25519" else "ed25519"
        assert raw_public_key(_pem(key), other) is None  # the algorithm is checked, not assumed


def test_anything_else_is_left_to_the_full_loader():
    key = Ed25519PrivateKey.generate()
    pem = _pem(key)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    for data in (b"", b"not a key", private_pem, pem + pem, pem.replace(b"M", b"!", 1), pem[:60] + pem[64:]):
        assert raw_public_key(data, "ed25519") is None


def test_signatures_verify_with_keys_read_both_ways(tmp_path):
    key_path, pub_path, kid = signing.generate_keypair(tmp_path, "central")
    by_pub, by_private = signing.load_public_keys([pub_path]), signing.load_public_keys([key_path])
    assert list(by_pub) == list(by_private) == [kid]
    doc = signing.sign({"type": "t", "n": 1}, signing.load_private_key(key_path))
    assert signing.verify(doc, by_pub) == signing.verify(doc, by_private) == [kid]
    with pytest.raises(signing.SignatureError, match="bad signature"):
        signing.verify({**doc, "n": 2}, by_pub)


def test_seal_key_errors_name_the_file(tmp_path):
    ed = tmp_path / "ed.pub"
    ed.write_bytes(_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(CryptoError, match="ed.pub is not an X25519 public key"):
        load_seal_public_key(ed)
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(CryptoError, match="junk.pub"):
        load_seal_public_key(junk)
    with pytest.raises(CryptoError, match="missing.pub"):
        load_seal_public_key(tmp_path / "missing.pub")


def test_loading_trusted_keys_does_not_load_cryptography(tmp_path):
    _, pub_path, _ = signing.generate_keypair(tmp_path, "central")
    x = X25519PrivateKey.generate()
    (tmp_path / "seal.pub").write_bytes(_pem(x))
    code = ("import sys; from edge import signing; from services.messaging import _crypto; "
            f"signing.load_public_keys([{str(pub_path)!r}]); _crypto.load_seal_public_key({str(tmp_path / 'seal.pub')!r}); "
            "_crypto.AtRest(bytes(32)); print(sorted(m for m in sys.modules if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
