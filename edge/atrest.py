"""Sealing data at rest with AES-256-GCM: the one format of every encrypted field on the device.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, with a
fresh random nonce each time. The associated data names the record the blob
belongs to (a subject id, a message id and resident), so a blob copied into
another record no longer opens. Used by the face gallery (templates, audit
crops) and the tablet's mailbox.

The cipher is libsodium's (PyNaCl, loaded on every device already for sealed
payloads and signatures) where it offers AES-256-GCM: on CPUs with AES and
carry-less multiplication instructions (x86 AES-NI and PCLMUL, ARMv8 crypto
extensions). Elsewhere it is ``cryptography``'s, imported on the first seal or
open, not with this module. ``cryptography``'s native module costs about 8 MB
resident in each process that loads it, and a gate has two that open the
gallery (the daemon and its face worker). Both write the same bytes, so a
blob sealed by one opens with the other (tests/test_atrest.py, both ways).
"""

from __future__ import annotations

import os
from functools import cache

from edge.errors import EdgeError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
ENGINES = ("sodium", "cryptography")


class NotAuthentic(EdgeError):
    """A sealed blob does not open: wrong key, damaged, or moved to another record."""


@cache
def sodium_available() -> bool:
    """libsodium has AES-256-GCM on this CPU (and PyNaCl exposes it: 1.6 or later)."""
    try:
        from nacl.bindings import crypto_aead_aes256gcm_encrypt
        from nacl.exceptions import UnavailableError
    except ImportError:
        return False
    try:
        crypto_aead_aes256gcm_encrypt(b"", None, bytes(NONCE_BYTES), bytes(KEY_BYTES))
    except UnavailableError:
        return False
    return True


class AtRestCipher:
    """AES-256-GCM under one 32-byte key; ``engine`` (tests) forces sodium or cryptography."""

    def __init__(self, key: bytes, *, engine: str | None = None):
        if len(key) != KEY_BYTES:
            raise ValueError(f"an at-rest key must be 32 bytes, not {len(key)}")
        if engine not in (None, *ENGINES):
            raise ValueError(f"unknown AES-GCM engine {engine!r}; expected one of {', '.join(ENGINES)}")
        self._key, self._engine, self._aead = bytes(key), engine, None

    @property
    def engine(self) -> str:
        if self._engine is None:
            self._engine = "sodium" if sodium_available() else "cryptography"
        return self._engine

    def _cipher(self):
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self._key)
        return self._aead

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        if self.engine == "sodium":
            from nacl.bindings import crypto_aead_aes256gcm_encrypt

            return nonce + crypto_aead_aes256gcm_encrypt(bytes(data), aad, nonce, self._key)
        return nonce + self._cipher().encrypt(nonce, bytes(data), aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext; ``NotAuthentic`` when the blob is not exactly what ``seal`` made for ``aad``."""
        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise NotAuthentic("sealed data too short")
        nonce, sealed = bytes(blob[:NONCE_BYTES]), bytes(blob[NONCE_BYTES:])
        if self.engine == "sodium":
            from nacl.bindings import crypto_aead_aes256gcm_decrypt
            from nacl.exceptions import CryptoError

            try:
                return crypto_aead_aes256gcm_decrypt(sealed, aad, nonce, self._key)
            except CryptoError:
                raise NotAuthentic("sealed data does not authenticate") from None
        from cryptography.exceptions import InvalidTag

        try:
            return self._cipher().decrypt(nonce, sealed, aad)
        except (InvalidTag, ValueError):
            raise NotAuthentic("sealed data does not authenticate") from None
