#!/usr/bin/env python3
"""Generate docs/signing-vectors.json: fixed keys, documents, canonical bytes, expected signatures.

For central implementers: sign each ``document`` with the key from ``seed_hex`` (Ed25519,
RFC 8032) over ``canonical_utf8`` and you must get ``signature_b64`` byte for byte; a
device verifies exactly that. ``--check`` exits 1 when the committed file differs from
what edge.signing produces (a change of the canonical form is a contract change).

Usage: scripts/gen_signing_vectors.py [--check] [--out docs/signing-vectors.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402

from edge.signing import key_id, sign, signed_bytes  # noqa: E402

# Documents chosen to exercise the canonical form: key order, nesting, non-ASCII text
# (kept as UTF-8, not \u escapes), integers, booleans, null, string escapes, and an
# existing signature that is NOT part of the signed bytes. The first is a command a
# device would accept (had it not expired).
_DOCUMENTS = [
    ("command", {"v": 1, "id": "6f1c2d3e-0000-4000-8000-000000000001", "name": "rebirth",
                 "device": "gate-north-1", "site": "hmp-example", "target": "edge", "args": {},
                 "issued_at": "2026-01-31T12:00:00Z", "expires_at": "2026-01-31T12:05:00Z"}),
    ("nested_and_unicode", {"z": [3, 1, 2], "a": {"y": True, "x": None, "é": "Zoë — café"}, "n": 1234567890123}),
    # Keys by code point: U+FB01 sorts before U+1F600 (UTF-16 code units would put it after).
    # Escaped: " \\ and U+0000..U+001F only (\b \f \n \r \t short, the rest \u00xx lower-case);
    # / DEL U+2028 and non-BMP characters are written as themselves.
    ("escapes_and_key_order", {"\U0001F600": 1, "\uFB01": 2, "Z": 3, "a": 4,
                               "s": "q\"b\\ t\tn\nr\rb\bf\f \x00\x01\x1f \x7f / \u2028 \U0001F600",
                               "neg": -42, "zero": 0}),
    ("second_signature", {"id": "doc-2", "body": "co-signed", "signatures": [
        {"key_id": "0000000000000000", "sig": "AAAA"}]}),
]


def _key(label: str) -> tuple[Ed25519PrivateKey, str]:
    seed = hashlib.sha256(f"edge signing test vector key {label}".encode()).digest()
    return Ed25519PrivateKey.from_private_bytes(seed), seed.hex()


def build() -> dict:
    key, seed_hex = _key("1")
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    vectors = []
    for name, doc in _DOCUMENTS:
        signed = sign(doc, key)
        canonical = signed_bytes(doc)
        vectors.append({"name": name, "document": doc, "canonical_utf8": canonical.decode(),
                        "canonical_sha256": hashlib.sha256(canonical).hexdigest(),
                        "signature_b64": signed["signatures"][-1]["sig"], "signed_document": signed})
    return {"description": "Ed25519 over canonical JSON (sorted keys, no spaces, UTF-8, the "
                           "'signatures' member removed). See docs/commands.md.",
            "key": {"seed_hex": seed_hex, "public_raw_hex": public.hex(),
                    "public_b64": base64.b64encode(public).decode(), "key_id": key_id(key.public_key()),
                    "key_id_rule": "first 16 hex digits of SHA-256 of the 32-byte raw public key"},
            "vectors": vectors}


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "signing-vectors.json")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} differs from edge.signing; run scripts/gen_signing_vectors.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
