"""Payloads sealed to their recipient device, so that the broker only ever routes ciphertext.

Each device has an X25519 key pair: the private half is made on first start in
the device's secrets (0600, never leaves the device); the public half is in its
birth message (``seal_key``), which is how central's device registry learns it.

Central seals a document (already signed by central: the signature is inside)
to one or more devices in one envelope: the document is encrypted once with a
random key (XSalsa20-Poly1305, libsodium's ``secretbox``) and that key is
sealed to each recipient's public key (libsodium's sealed box: ephemeral
X25519 + XSalsa20-Poly1305). A site-wide gallery update is one message whose
envelope names every device of the site.

Why PyNaCl (libsodium): one well-kept library whose sealed box is a single
call that is hard to misuse (no nonce, KDF or AEAD choices to get wrong), and
it is far lighter to load than ``cryptography`` on a tablet that must stay small.
"""

from __future__ import annotations

import base64
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

ALG = "x25519-sealedbox+xsalsa20poly1305"
KEY_FILE = "seal.key"


class SealError(EdgeError):
    """A sealed payload is not for this device, is damaged, or was expected sealed and is not."""


def _b64d(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        raise SealError(f"{what} is not base64") from None


class DeviceKey:
    """This device's X25519 key pair (PyNaCl is imported only when one is loaded)."""

    def __init__(self, private_raw: bytes):
        from nacl.public import PrivateKey

        self._private = PrivateKey(private_raw)
        self.public_raw = bytes(self._private.public_key)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.public_raw).decode()

    def open(self, envelope: dict[str, Any], device: str, what: str) -> bytes:
        from nacl.exceptions import CryptoError
        from nacl.public import SealedBox
        from nacl.secret import SecretBox

        if envelope.get("alg") != ALG:
            raise SealError(f"{what}: sealed with {envelope.get('alg')!r}; expected {ALG!r}")
        recipients = envelope.get("recipients")
        if not isinstance(recipients, dict) or device not in recipients:
            raise SealError(f"{what}: not sealed to this device ({device})")
        try:
            key = SealedBox(self._private).decrypt(_b64d(recipients[device], f"{what}: recipients.{device}"))
            return SecretBox(key).decrypt(_b64d(envelope.get("box"), f"{what}: box"))
        except (CryptoError, ValueError, TypeError):
            raise SealError(f"{what}: does not open with this device's key (damaged, or sealed "
                            "to an old key of this device)") from None


def key_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / "secrets" / KEY_FILE


@cache
def device_key(state_dir: Path) -> DeviceKey:
    """The device's key pair, made on first use (one per state folder), in edge.secrets."""
    from edge import secrets

    return DeviceKey(secrets.key(state_dir, KEY_FILE))


def seal(plaintext: bytes, recipients: dict[str, bytes]) -> dict[str, Any]:
    """Central's side (and the tests'): seal ``plaintext`` to ``{device id: raw X25519 public key}``."""
    from nacl.public import PublicKey, SealedBox
    from nacl.secret import SecretBox
    from nacl.utils import random

    key = random(SecretBox.KEY_SIZE)
    return {"alg": ALG,
            "recipients": {dev: base64.b64encode(SealedBox(PublicKey(pub)).encrypt(key)).decode()
                           for dev, pub in recipients.items()},
            "box": base64.b64encode(bytes(SecretBox(key).encrypt(plaintext))).decode()}


def sealed_message(plaintext: bytes, recipients: dict[str, bytes]) -> bytes:
    """The wire form: ``{"sealed": envelope}``."""
    return json.dumps({"sealed": seal(plaintext, recipients)}).encode()


def unseal(raw: bytes, key: DeviceKey, device: str, what: str) -> bytes:
    """The document inside a ``{"sealed": ...}`` message; SealError for anything else."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("sealed"), dict):
        raise SealError(f"{what}: not sealed; central must seal it to this device's key "
                        "(the birth message's seal_key)")
    return key.open(doc["sealed"], device, what)
