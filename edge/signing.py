"""Ed25519 signatures over canonical JSON: commands, galleries, catalogs, contact lists.

A signed document is a JSON object with a ``signatures`` list; each entry is
``{"key_id": ..., "sig": base64}`` over the canonical bytes of the document
without its ``signatures``. ``key_id`` is the first 16 hex digits of the
SHA-256 of the raw public key, so a key can be named without trusting a label.
``open_signed`` is the one way in for a signed document from central: every
subsystem that receives one refuses it for the same reasons, in the same words.

Verification runs in libsodium (PyNaCl), which the device already loads for sealed
payloads: ``cryptography``'s native module costs about 9 MB resident, and a tablet
receives a signed document as soon as it connects (a retained catalog or contact
list), so verifying with it would put every tablet in service over its memory
budget. Trusted keys are read as raw bytes (``edge.pem``); ``cryptography`` is
loaded only to sign (central's tools, tests) and to read keys in other formats.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from edge.errors import EdgeError
from edge.events import canonical_json
from edge.pem import raw_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )


class SignatureError(EdgeError):
    """A signed document is unsigned, badly signed, or signed by too few trusted keys."""


class DocumentRejected(SignatureError):
    """A signed document from central was refused; ``problem`` names the check that failed."""

    def __init__(self, what: str, problem: str, detail: str):
        super().__init__(f"{what}: {detail}")
        self.what, self.problem, self.detail = what, problem, detail


M = TypeVar("M", bound=BaseModel)
MAX_SIGNATURES = 16  # more is an attempt to make the device spend time verifying
# A signed document from central larger than this is refused before it is parsed;
# callers with a smaller per-type limit pass ``max_bytes``.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


class InvalidSignatureError(EdgeError):
    """An Ed25519 signature that does not verify for the data and key it was checked with."""


class TrustedKey:
    """An Ed25519 public key held as its 32 raw bytes, verified with libsodium."""

    __slots__ = ("raw", "_key")

    def __init__(self, raw: bytes):
        self.raw, self._key = raw, None

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise InvalidSignatureError when ``signature`` is not valid for ``data``."""
        from nacl.exceptions import BadSignatureError

        if self._key is None:
            from nacl.signing import VerifyKey

            self._key = VerifyKey(self.raw)
        if len(signature) != 64:
            raise InvalidSignatureError(f"an Ed25519 signature is 64 bytes, not {len(signature)}")
        try:
            self._key.verify(data, signature)
        except BadSignatureError:
            raise InvalidSignatureError("signature does not verify") from None


def signature_errors() -> tuple[type[BaseException], ...]:
    """What a public key's ``verify`` raises for a bad signature: ours (TrustedKey), and
    cryptography's when the caller holds its keys (it is then already imported)."""
    errors: tuple[type[BaseException], ...] = (InvalidSignatureError, ValueError, TypeError)
    if (crypto := sys.modules.get("cryptography.exceptions")) is not None:
        errors += (crypto.InvalidSignature,)
    return errors


def preload() -> None:
    """Import the verifier now: on a gate, the first grant should not wait for the import."""
    import nacl.signing  # noqa: F401


def _raw(public_key: Ed25519PublicKey | TrustedKey) -> bytes:
    if isinstance(public_key, TrustedKey):
        return public_key.raw
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey | TrustedKey) -> str:
    return hashlib.sha256(_raw(public_key)).hexdigest()[:16]


def signed_bytes(doc: Mapping[str, Any]) -> bytes:
    """The canonical bytes a signature covers; SignatureError when the document has none.

    NaN, Infinity (also what a huge number like 1e999 parses to) and lone UTF-16
    surrogates have no canonical form: nobody can have signed such a document, so
    it is refused as a signature failure, never as an exception that escapes.
    """
    try:
        return canonical_json({k: v for k, v in doc.items() if k != "signatures"})
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise SignatureError(f"no canonical form, so no valid signature ({_no_canonical(exc)})") from None


def _no_canonical(exc: BaseException) -> str:
    if isinstance(exc, UnicodeError):
        return "a string holds a lone UTF-16 surrogate"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, TypeError):
        return "a value is not JSON"
    return "a number is not finite (NaN or Infinity)"


def sign(doc: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a copy of ``doc`` with one more signature appended."""
    sig = private_key.sign(signed_bytes(doc))
    entry = {"key_id": key_id(private_key.public_key()), "sig": base64.b64encode(sig).decode()}
    return {**doc, "signatures": [*doc.get("signatures", []), entry]}


def verify(doc: Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey | TrustedKey],
           required: int = 1) -> list[str]:
    """Return the distinct trusted key ids with a valid signature; raise if fewer than ``required``."""
    signatures = doc.get("signatures")
    if not signatures or not isinstance(signatures, list):
        raise SignatureError("not signed (no 'signatures' list)")
    if len(signatures) > MAX_SIGNATURES:
        raise SignatureError(f"{len(signatures)} signatures; at most {MAX_SIGNATURES} are read")
    payload = signed_bytes(doc)
    good: list[str] = []
    problems: list[str] = []
    for entry in signatures:
        if not isinstance(entry, dict):
            problems.append("a signature entry is not an object")
            continue
        kid = entry.get("key_id")
        key = trusted.get(kid) if isinstance(kid, str) else None
        if key is None:
            problems.append(f"key {kid!r} is not trusted")
            continue
        try:
            key.verify(base64.b64decode(entry.get("sig", ""), validate=True), payload)
        except (*signature_errors(), AttributeError):
            problems.append(f"bad signature from key {kid}")
            continue
        if kid not in good:
            good.append(kid)
    if len(good) < required:
        detail = "; ".join(problems) if problems else "no valid signature"
        raise SignatureError(f"needs {required} valid signature(s) from distinct trusted keys, "
                             f"has {len(good)} ({detail})")
    return good


def open_signed(raw: bytes | str | Mapping[str, Any], trusted: Mapping[str, Ed25519PublicKey | TrustedKey],
                model: type[M] | None, what: str, *, site: str | None = None,
                device: str | None = None, max_bytes: int = MAX_DOCUMENT_BYTES) -> M | dict[str, Any]:
    """Decode, verify, validate and check the addressee of one signed document from central.

    The checks run in this order so that an unauthenticated document learns
    nothing about the schema or the device: JSON object, signature, ``model``
    (skipped when None: the caller checks the fields itself), then ``site`` and
    ``device`` when given. Raises DocumentRejected whose message starts with
    ``what``; ``problem`` is one of not_json | not_object | signature | schema |
    wrong_site | wrong_device | too_large (checked first, before anything is parsed).
    """
    if isinstance(raw, bytes | bytearray | str) and len(raw) > max_bytes:
        raise DocumentRejected(what, "too_large", f"{len(raw)} bytes is over the {max_bytes}-byte limit "
                               "for this document; not read")
    try:
        doc = json.loads(raw) if isinstance(raw, bytes | bytearray | str) else raw
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DocumentRejected(what, "not_json", f"not JSON ({str(exc)[:120]}); expected a UTF-8 JSON object") from None
    if not isinstance(doc, dict):
        got = _JSON_TYPES.get(type(doc), type(doc).__name__)
        raise DocumentRejected(what, "not_object", f"not a JSON object (got a JSON {got}); "
                               "expected an object with a 'signatures' list")
    try:
        verify(doc, trusted)
    except SignatureError as exc:
        raise DocumentRejected(what, "signature", f"signature refused: {exc}") from None
    parsed: Any = doc
    if model is not None:
        try:
            parsed = model.model_validate(doc)
        except ValidationError as exc:
            raise DocumentRejected(what, "schema", _first_problem(exc)) from None
    for field, want, problem, here in (("site", site, "wrong_site", "this device is at"),
                                       ("device", device, "wrong_device", "this is")):
        got = parsed.get(field) if model is None else getattr(parsed, field, None)
        if want is not None and got != want:
            raise DocumentRejected(what, problem, f"addressed to {field} {got!r}, {here} {want!r}")
    return parsed


def _first_problem(exc: ValidationError) -> str:
    """'wrong schema at where: message' for the first error, with a count of the others."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"wrong schema at {where}: {first['msg'].removeprefix('Value error, ')}{more}"


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except TypeError:
        raise SignatureError(f"{path}: the private key is protected by a passphrase; expected an "
                             "unencrypted PEM Ed25519 key, NAME.key from `edge keys gen`") from None
    except ValueError:  # not PEM at all, or a public key (NAME.pub)
        raise SignatureError(f"{path}: not a PEM private key; expected an Ed25519 private key, "
                             "NAME.key from `edge keys gen` (not NAME.pub)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 private key")
    return key


def load_public_keys(paths: Iterable[str | os.PathLike]) -> dict[str, TrustedKey]:
    """key_id -> public key, from PEM files (public keys or, for tests, private keys)."""
    keys: dict[str, TrustedKey] = {}
    for path in paths:
        data = Path(path).read_bytes()
        if (raw := raw_public_key(data, "ed25519")) is not None:
            keys[key_id(TrustedKey(raw))] = TrustedKey(raw)
            continue
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                key = serialization.load_pem_private_key(data, password=None).public_key()
            except (ValueError, TypeError) as exc:
                raise SignatureError(f"{path}: not a PEM Ed25519 key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError(f"{path}: not an Ed25519 key")
        trusted = TrustedKey(_raw(key))
        keys[key_id(trusted)] = trusted
    return keys


def write_pem_keypair(folder: str | os.PathLike, stem: str, private) -> tuple[Path, Path]:
    """Write STEM.key (0600, never overwriting) and STEM.pub for any cryptography private key."""
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = folder / f"{stem}.key", folder / f"{stem}.pub"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    # 0640: a device refuses a trust anchor that others may read or change (edge.trust).
    fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    os.chmod(pub_path, 0o640)
    return key_path, pub_path


def generate_keypair(folder: str | os.PathLike, name: str, roles: Iterable[str] | None = None,
                     ) -> tuple[Path, Path, str]:
    """Write NAME.key (0600), NAME.pub and its roles file NAME.pub.json (0640) into folder.

    ``roles`` None means every role: what tests and demos want. ``edge keys gen``
    always passes the roles the operator chose. Returns (key path, pub path, key id).
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.trust.roles import ROLES, write_roles

    private = Ed25519PrivateKey.generate()
    key_path, pub_path = write_pem_keypair(folder, name, private)
    kid = key_id(private.public_key())
    write_roles(pub_path, ROLES if roles is None else roles, kid=kid)
    return key_path, pub_path, kid
