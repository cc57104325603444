"""Reading trust anchors: public key files and the roles file next to each.

A trust anchor is ``NAME.pub`` (PEM Ed25519 SubjectPublicKeyInfo) plus
``NAME.pub.json`` beside it::

    {"roles": ["command"], "expires": "2027-12-31T00:00:00Z", "key_id": "a1b2c3d4e5f60718"}

``roles`` is required; ``expires`` and ``key_id`` are optional (``key_id``,
when given, must be the key's, so a swapped key file does not inherit roles).
Every check here names the file it refuses; each one is a rule of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import ConfigError
from edge.pem import raw_public_key
from edge.signing import TrustedKey, key_id
from edge.trust.roles import ROLES, roles_path


class TrustAnchorError(ConfigError):
    """A trust anchor file is unusable: private, unparsable, duplicate or badly protected."""


@dataclass(frozen=True)
class Anchor:
    """One trusted public key with what it may sign."""

    key_id: str
    fingerprint: str  # SHA-256 of the raw 32-byte public key, hex
    path: str
    roles: frozenset[str]
    expires: datetime | None
    key: TrustedKey

    def as_dict(self) -> dict:
        return {"key_id": self.key_id, "fingerprint": self.fingerprint, "path": self.path,
                "roles": sorted(self.roles), "expires": self.expires.isoformat() if self.expires else None}


def load_anchors(paths) -> dict[str, Anchor]:
    """key_id -> Anchor for every file; TrustAnchorError listing every refused file."""
    anchors: dict[str, Anchor] = {}
    by_fingerprint: dict[str, str] = {}
    problems: list[str] = []
    for i, path in enumerate(paths):
        where = f"trust.central_keys[{i}]: {path}"
        try:
            anchor = read_anchor(path)
        except TrustAnchorError as exc:
            problems.append(f"{where}: {exc.lines[0]}")
            continue
        if anchor.fingerprint in by_fingerprint:
            problems.append(f"{where}: duplicate key: same fingerprint {anchor.fingerprint[:16]}… "
                            f"as {by_fingerprint[anchor.fingerprint]}; list each key once")
            continue
        by_fingerprint[anchor.fingerprint] = str(path)
        anchors[anchor.key_id] = anchor
    if problems:
        raise TrustAnchorError(problems)
    return anchors


def read_anchor(path: str | os.PathLike) -> Anchor:
    """One anchor, after the checks in order: file mode, public-only content, parse, roles file."""
    data = _read_protected(Path(path), "key file")
    raw = _public_key(data)
    trusted = TrustedKey(raw)
    kid = key_id(trusted)
    roles, expires = _read_roles(Path(path), kid)
    return Anchor(kid, hashlib.sha256(raw).hexdigest(), str(path), roles, expires, trusted)


def _read_protected(path: Path, what: str) -> bytes:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise TrustAnchorError([f"{what} is not a regular file"])
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrustAnchorError([f"{what} does not exist"]) from None
    except PermissionError:
        raise TrustAnchorError([f"{what} cannot be read by the daemon's user (permission denied)"]) from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o007:
        raise TrustAnchorError([f"{what} is readable or writable by others (mode {mode:04o}); "
                                f"expected 0640 or stricter: chmod o-rwx {path}"])
    if mode & 0o020:
        raise TrustAnchorError([f"{what} is writable by its group (mode {mode:04o}); "
                                f"expected 0640 or stricter: chmod g-w {path}"])
    return data


def _public_key(data: bytes) -> bytes:
    if b"PRIVATE KEY" in data:
        raise TrustAnchorError(["holds a PRIVATE key; a trust anchor must be a public key only "
                                "(remove the private key from this device and install NAME.pub)"])
    raw = raw_public_key(data, "ed25519")
    if raw is not None:
        return raw
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise TrustAnchorError([f"not a parsable PEM public key ({str(exc)[:80]}); "
                                "expected an Ed25519 public key (edge keys gen)"]) from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrustAnchorError([f"is a {type(key).__name__}, not an Ed25519 public key"])
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _read_roles(key_path: Path, kid: str) -> tuple[frozenset[str], datetime | None]:
    path = roles_path(key_path)
    try:
        data = _read_protected(path, f"roles file {path.name}")
    except TrustAnchorError as exc:
        if "does not exist" in exc.lines[0]:
            raise TrustAnchorError([f"has no roles file {path.name} beside it; write "
                                    '{"roles": ["command"]} there (roles: ' + ", ".join(ROLES) + ")"]) from None
        raise
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrustAnchorError([f"roles file {path.name} is not JSON ({exc})"]) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("roles"), list) or not doc["roles"]:
        raise TrustAnchorError([f"roles file {path.name}: expected an object with a non-empty 'roles' list"])
    unknown = [r for r in doc["roles"] if r not in ROLES]
    if unknown:
        raise TrustAnchorError([f"roles file {path.name}: unknown role(s) {unknown}; roles are "
                                + ", ".join(ROLES)])
    if doc.get("key_id") not in (None, kid):
        raise TrustAnchorError([f"roles file {path.name} is for key {doc['key_id']}, this key is {kid}"])
    expires = None
    if doc.get("expires") is not None:
        try:
            expires = datetime.fromisoformat(str(doc["expires"]).replace("Z", "+00:00"))
        except ValueError:
            raise TrustAnchorError([f"roles file {path.name}: expires {doc['expires']!r} is not an "
                                    "ISO 8601 time"]) from None
        if expires.tzinfo is None:
            raise TrustAnchorError([f"roles file {path.name}: expires needs a timezone (…Z)"])
        expires = expires.astimezone(UTC)
    return frozenset(doc["roles"]), expires
