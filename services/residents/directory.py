"""The signed resident directory: who may log in on this tablet, and how their PIN is checked.

Central publishes one directory per tablet (retained). It never holds a PIN:
each resident has a scrypt verifier with their own random salt. scrypt comes
with Python's ``hashlib`` (OpenSSL), so a tablet needs no extra library for it;
its memory cost (128 * n * r bytes, 16 MiB at the floor) is paid by one check
at a time, because the login guard lets only one check run at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge import signing
from edge.errors import EdgeError
from edge.schema import PSEUDONYM

#: The one place that names what a directory is. ``DIRECTORY_ROLE`` is the key role its
#: signers must hold (edge.trust.DOCUMENT_ROLES maps the document type "directory" to it).
DIRECTORY_TYPE: Final = "residents.directory"
DIRECTORY_ROLE = "directory"

_MIN_N, _MAX_N = 2**14, 2**16


class DirectoryRefused(EdgeError):
    """A resident directory from central is unsigned, malformed, or for another tablet."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _b64(value: str, what: str, min_len: int) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} is not base64") from None
    if len(raw) < min_len:
        raise ValueError(f"{what} has {len(raw)} bytes; at least {min_len}")
    return raw


class PinVerifier(_M):
    """scrypt(PIN, salt, n, r, p) -> 32 bytes; the PIN itself is never sent or kept."""

    alg: Literal["scrypt"]
    n: int = Field(description=f"CPU/memory cost, a power of two from {_MIN_N} to {_MAX_N}.")
    r: int = Field(ge=8, le=16)
    p: int = Field(ge=1, le=4)
    salt: str = Field(description="base64, at least 16 random bytes, different for every resident")
    hash: str = Field(description="base64 of the 32-byte scrypt output")

    @field_validator("n")
    @classmethod
    def _power_of_two(cls, n: int) -> int:
        if n < _MIN_N or n > _MAX_N or n & (n - 1):
            raise ValueError(f"must be a power of two from {_MIN_N} to {_MAX_N}")
        return n

    @model_validator(mode="after")
    def _sizes(self) -> PinVerifier:
        _b64(self.salt, "salt", 16)
        if len(_b64(self.hash, "hash", 32)) != 32:
            raise ValueError("hash must be 32 bytes")
        return self

    def matches(self, pin: str) -> bool:
        got = _scrypt(pin, base64.b64decode(self.salt), self.n, self.r, self.p)
        return hmac.compare_digest(got, base64.b64decode(self.hash))


class ResidentEntry(_M):
    pseudonym: str = Field(pattern=PSEUDONYM)
    status: Literal["active", "suspended", "released"]
    verifier: PinVerifier


class DirectoryDoc(_M):
    """Every resident who may log in on one tablet, signed by central."""

    type: Literal[DIRECTORY_TYPE]
    site: str
    device: str
    version: int = Field(ge=1, description="Higher replaces lower; an equal or lower version is ignored.")
    issued_at: datetime
    residents: list[ResidentEntry] = Field(max_length=10_000)
    signatures: list[dict[str, Any]]

    @field_validator("residents")
    @classmethod
    def _unique(cls, residents: list[ResidentEntry]) -> list[ResidentEntry]:
        names = [r.pseudonym for r in residents]
        if len(set(names)) != len(names):
            raise ValueError("a pseudonym is listed twice")
        return residents


def _scrypt(pin: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(pin.encode(), salt=salt, n=n, r=r, p=p, dklen=32,
                          maxmem=128 * n * r * p + 1024 * 1024)


def make_verifier(pin: str, n: int = _MIN_N, r: int = 8, p: int = 1) -> dict[str, Any]:
    """Central's side: the verifier for ``pin`` with a fresh salt (also used by tests)."""
    salt = os.urandom(16)
    return {"alg": "scrypt", "n": n, "r": r, "p": p, "salt": base64.b64encode(salt).decode(),
            "hash": base64.b64encode(_scrypt(pin, salt, n, r, p)).decode()}


def decoy_verifier(like: PinVerifier | None) -> PinVerifier:
    """A verifier no PIN matches, as costly as ``like``: checked for unknown pseudonyms, so that
    a wrong PIN takes the same time whether or not the pseudonym exists."""
    n, r, p = (like.n, like.r, like.p) if like else (_MIN_N, 8, 1)
    return PinVerifier(alg="scrypt", n=n, r=r, p=p, salt=base64.b64encode(os.urandom(16)).decode(),
                       hash=base64.b64encode(os.urandom(32)).decode())


def parse_directory(raw: bytes, trusted: dict, site: str, device: str) -> DirectoryDoc:
    """Verify signature, schema and addressee (edge.signing.open_signed); raise DirectoryRefused."""
    try:
        return signing.open_signed(raw, trusted, DirectoryDoc, DIRECTORY_TYPE, site=site, device=device)
    except signing.DocumentRejected as exc:
        raise DirectoryRefused(str(exc)) from None
