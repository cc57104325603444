"""Sealing data at rest with AES-256-GCM: the one format of every encrypted field on the device.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, with a
fresh random nonce each time. The associated data names the record the blob
belongs to (a subject id, a message id and resident), so a blob copied into
another record no longer opens. Used by the face gallery (templates, audit
crops) and the tablet's mailbox.

``cryptography`` is imported on the first seal or open, not with this module:
a tablet with an empty mailbox does not carry it.
"""

from __future__ import annotations

import os

from edge.errors import EdgeError

NONCE_BYTES = 12
TAG_BYTES = 16


class NotAuthentic(EdgeError):
    """A sealed blob does not open: wrong key, damaged, or moved to another record."""


class AtRestCipher:
    """AES-256-GCM under one 32-byte key."""

    def __init__(self, key: bytes):
        if len(key) != 32:
            raise ValueError(f"an at-rest key must be 32 bytes, not {len(key)}")
        self._key, self._aead = bytes(key), None

    def _cipher(self):
        if self._aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(self._key)
        return self._aead

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._cipher().encrypt(nonce, bytes(data), aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext; ``NotAuthentic`` when the blob is not exactly what ``seal`` made for ``aad``."""
        from cryptography.exceptions import InvalidTag

        if len(blob) < NONCE_BYTES + TAG_BYTES:
            raise NotAuthentic("sealed data too short")
        try:
            return self._cipher().decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise NotAuthentic("sealed data does not authenticate") from None
