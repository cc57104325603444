"""Adding a second person's signature to a command file (``edge cmd cosign``).

Two people sign without sharing a machine: the first writes the command with
``edge cmd sign --out FILE``, the second checks what it says and adds a
signature over the *same* canonical content. A file whose existing signatures
do not verify over its content (someone changed it after signing) is refused
here, as every device would refuse it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.signing import key_id, load_private_key, sign, signed_bytes


class CosignRefused(EdgeError):
    """The command file cannot be co-signed: changed after signing, or already signed by this key."""


def cosign_file(path: str | os.PathLike, private_key_path: str | os.PathLike,
                signer_pubs=()) -> dict[str, Any]:
    """Check the file, add our signature, rewrite the file; return the doc.

    ``signer_pubs``: public key files of the earlier signers; when given, their
    signatures must verify over this content (else the file changed after signing).
    Without them the device does that check, and refuses such a command.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise CosignRefused(f"{path}: not JSON ({exc}); expected a command from `edge cmd sign --out`") from None
    signed = cosign(doc, private_key_path, signer_pubs, where=str(path))
    Path(path).write_text(json.dumps(signed, indent=2) + "\n")
    return signed


def cosign(doc: Any, private_key_path: str | os.PathLike, signer_pubs=(), *, where: str) -> dict[str, Any]:
    """``doc`` with our signature added, after the checks ``cosign_file`` describes (``where``
    names the command in errors: a file, or a proposal in central's database)."""
    cosign_check(doc, where=where, signer_pubs=signer_pubs)
    private = load_private_key(private_key_path)
    mine = key_id(private.public_key())
    if any(isinstance(e, dict) and e.get("key_id") == mine for e in doc["signatures"]):
        raise CosignRefused(f"{where}: key {mine} already signed this command; the second signature must "
                            "come from a second person's key")
    return sign(doc, private)


def cosign_check(doc: Any, *, where: str, signer_pubs=()) -> None:
    """Refuse what is not a signed command, or whose signatures do not cover its content (when the
    signers' public keys are given; a device refuses such a command anyway)."""
    from pydantic import ValidationError

    from edge.commands.model import Command

    if not isinstance(doc, dict) or not isinstance(doc.get("signatures"), list) or not doc["signatures"]:
        raise CosignRefused(f"{where}: not a signed command (no 'signatures'); sign it with `edge cmd sign`")
    try:
        Command.model_validate(doc)
    except ValidationError as exc:
        raise CosignRefused(f"{where}: not a command devices would accept: {exc.errors()[0]['msg']}") from None
    _check_existing(doc, where, signer_pubs)


def _check_existing(doc: dict[str, Any], path, signer_pubs) -> None:
    from edge.signing import load_public_keys, signature_errors

    known = load_public_keys(signer_pubs) if signer_pubs else {}
    payload = signed_bytes(doc)
    for entry in doc["signatures"]:
        kid = entry.get("key_id") if isinstance(entry, dict) else None
        try:
            raw = base64.b64decode(entry.get("sig", ""), validate=True) if kid else b""
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 64:
            raise CosignRefused(f"{path}: signature entry {kid!r} is not an Ed25519 signature")
        if kid in known:
            try:
                known[kid].verify(raw, payload)
            except signature_errors():
                raise CosignRefused(f"{path}: the signature of key {kid} does not cover this content: the "
                                    "file changed after it was signed; do not sign it") from None
