"""Raw 32-byte Curve25519 public keys out of PEM, without loading ``cryptography``.

``cryptography``'s native module costs about 9 MB of resident memory, and a
tablet that never receives a signed command or sends a message never needs it.
Key files are read at start-up, so the common form (SubjectPublicKeyInfo PEM,
which ``edge keys`` and central write) is parsed here: for these two algorithms
the DER is always 44 bytes, a fixed 12-byte header naming the algorithm, then
the key. Anything else (private keys, other encodings) returns None and the
caller uses ``cryptography``'s full loader, with its errors.
"""

from __future__ import annotations

import base64
import binascii
import re

# SEQUENCE { SEQUENCE { OID 1.3.101.112 | 1.3.101.110 }, BIT STRING (33 bytes, 0 unused bits) }
_SPKI_HEADER = {
    "ed25519": bytes.fromhex("302a300506032b6570032100"),
    "x25519": bytes.fromhex("302a300506032b656e032100"),
}
_PEM = re.compile(rb"-----BEGIN PUBLIC KEY-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----")


def raw_public_key(pem: bytes, algorithm: str) -> bytes | None:
    """The 32-byte key if ``pem`` holds exactly one ``algorithm`` SubjectPublicKeyInfo, else None."""
    blocks = _PEM.findall(pem)
    if len(blocks) != 1:
        return None
    try:
        der = base64.b64decode(b"".join(blocks[0].split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    header = _SPKI_HEADER[algorithm]
    if len(der) != len(header) + 32 or not der.startswith(header):
        return None
    return der[len(header):]
