"""Encryption of messages: at rest on the tablet, and sealed to central inside events.

At rest: AES-256-GCM under ``secrets/mailbox.key`` (mode 0600, made on first
use; refused if anyone else can read it). Each field gets a fresh 96-bit nonce
and is bound by associated data to its message and resident, so a ciphertext
cannot be moved to another record. Rows are found by a keyed tag
(HMAC-SHA256 under a subkey HKDF-derived from the same key), never by the
pseudonym: without the key the tags name nobody, and one key (or one systemd
credential) still covers the whole mailbox.

In events: the outbound message is sealed to central's X25519 public key
(ephemeral X25519, HKDF-SHA256, AES-256-GCM), so the event store, its WAL and
the broker only ever hold ciphertext of a body or an attachment.

``cryptography`` is imported on first use (see ``edge.signing``): an idle
tablet with an empty mailbox does not carry it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from edge._fs import KeyFileError
from edge.atrest import AtRestCipher, NotAuthentic
from edge.errors import EdgeError
from edge.pem import raw_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

SEAL_ALG = "X25519-HKDF-SHA256-A256GCM"
_INFO = b"edge messaging seal v1"
_INDEX_INFO = b"edge mailbox index v1"


class CryptoError(EdgeError):
    """A key is missing, unsafe, or a ciphertext does not authenticate."""


def load_or_create_key(state_dir: Path, legacy: Path | None = None) -> bytes:
    """The at-rest key, in the secrets folder (edge.secrets): created 0600 if missing; refused if
    group or others can read it; moved there from ``legacy`` (beside the mailbox) once."""
    from edge import secrets

    try:
        return secrets.key(state_dir, "mailbox.key", legacy=legacy)
    except KeyFileError as exc:
        raise CryptoError(str(exc)) from None


class AtRest:
    """AES-256-GCM for one field of one record: nonce || ciphertext+tag (edge.atrest)."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise CryptoError(f"the at-rest key must be 32 bytes, not {len(key)}")
        self._key, self._cipher, self._index_key = key, AtRestCipher(key), None

    def seal(self, data: bytes, aad: str) -> bytes:
        return self._cipher.seal(data, aad.encode())

    def open(self, blob: bytes, aad: str) -> bytes:
        try:
            return self._cipher.open(blob, aad.encode())
        except NotAuthentic:
            raise CryptoError("stored message data does not authenticate (damaged or moved)") from None

    def tag(self, *parts: str) -> bytes:
        """The lookup key of a record named by ``parts`` (kind, resident, ...): same parts, same tag;
        without the key, no way back to them nor to check a guessed pseudonym."""
        if self._index_key is None:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            self._index_key = HKDF(hashes.SHA256(), 32, salt=None, info=_INDEX_INFO).derive(self._key)
        # A JSON list is an unambiguous encoding: ("a", "b:c") and ("a:b", "c") differ.
        return hmac.new(self._index_key, json.dumps(parts).encode(), hashlib.sha256).digest()


def _derive(shared: bytes, epk: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt=epk, info=_INFO).derive(shared)


def seal_to(public_key: bytes, plaintext: bytes, aad: str) -> dict[str, str]:
    """Encrypt for the holder of the X25519 private key only (``public_key``: its 32 raw bytes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    eph = X25519PrivateKey.generate()
    epk = eph.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = _derive(eph.exchange(X25519PublicKey.from_public_bytes(public_key)), epk)
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, plaintext, aad.encode())
    b64 = base64.b64encode
    return {"alg": SEAL_ALG, "epk": b64(epk).decode(), "nonce": b64(nonce).decode(), "ct": b64(ct).decode()}


def open_sealed(private_key: X25519PrivateKey, sealed: dict[str, str], aad: str) -> bytes:
    """Central's side (and the tests'): decrypt what ``seal_to`` produced."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        epk = base64.b64decode(sealed["epk"])
        key = _derive(private_key.exchange(X25519PublicKey.from_public_bytes(epk)), epk)
        return AESGCM(key).decrypt(base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ct"]), aad.encode())
    except (KeyError, ValueError, InvalidTag):
        raise CryptoError("sealed message does not open with this key") from None


def load_seal_public_key(path: Path) -> bytes:
    """Central's X25519 public key (raw 32 bytes) from its PEM file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CryptoError(f"messaging.central_seal_key: {path}: {exc}") from None
    if (raw := raw_public_key(data, "x25519")) is not None:
        return raw
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise CryptoError(f"messaging.central_seal_key: {path}: {exc}") from None
    if not isinstance(key, X25519PublicKey):
        raise CryptoError(f"messaging.central_seal_key: {path} is not an X25519 public key "
                          "(expected the .x25519.pub file from `edge keys`)")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def generate_seal_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """NAME.x25519.key (0600, central keeps it) and NAME.x25519.pub (goes to tablets)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from edge.signing import write_pem_keypair

    return write_pem_keypair(folder, f"{name}.x25519", X25519PrivateKey.generate())


def load_seal_private_key(path: Path) -> X25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise CryptoError(f"{path} is not an X25519 private key")
    return key
