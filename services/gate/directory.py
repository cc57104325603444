"""The credential directory: who holds which card, their PIN hash and their face, signed by central.

Central publishes (retained, on ``edge/v1/{site}/gate/directory``) or hands
to ``edge gate directory load FILE`` a document signed with edge.signing::

    {"type": "gate.directory", "site": "hmp-example", "issued_at": "2026-02-01T10:00:00Z",
     "holders": [{"id": "staff-0042", "kind": "staff", "credentials": ["12:3456"],
                  "pin": {"salt": "<hex>", "hash": "<hex>", "iterations": 100000},
                  "subject_id": "staff-0042"}],
     "signatures": [...]}

``credentials`` are the ids the readers report (``reader.card``); ``pin`` is
PBKDF2-HMAC-SHA256 of the PIN (the reader driver checks it, the PIN never
leaves the reader driver); ``subject_id`` is the holder's face in the
biometric gallery (card + face). The last accepted document is kept in
``state_dir`` and verified again at every start: the gate decides offline
from it, and a file changed on disk is refused like a forged message.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from edge.schema import EXTERNAL_ID, PIN_HASH_HEX, PIN_SALT_HEX
from edge.signing import DocumentRejected, open_signed

#: The one place the document's type is named: a document of another type is refused
#: even when it is validly signed (a gallery or a catalog cannot pass for a directory).
DOCUMENT_TYPE = "gate.directory"
#: How edge.trust names it: its signers need the 'directory' role (edge.trust.DOCUMENT_ROLES).
TRUST_DOCUMENT = "directory"
FILE = "gate-directory.json"
MAX_BYTES = 8 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PinHash(_Strict):
    salt: str = Field(pattern=PIN_SALT_HEX)
    hash: str = Field(pattern=PIN_HASH_HEX)
    iterations: int = Field(ge=10_000, le=10_000_000)


class Holder(_Strict):
    id: str = Field(pattern=EXTERNAL_ID)
    kind: Literal["staff", "visitor", "contractor", "official"]
    credentials: list[str] = Field(default_factory=list, max_length=16)
    pin: PinHash | None = None
    subject_id: str | None = Field(default=None, pattern=EXTERNAL_ID, description="Face in the gallery.")
    valid_until: AwareDatetime | None = None


class DirectoryDoc(_Strict):
    type: Literal["gate.directory"]
    site: str
    issued_at: AwareDatetime
    holders: list[Holder] = Field(max_length=100_000)
    signatures: list[dict[str, Any]]


class Directory:
    """The accepted directory (or none yet); ``holder(credential)`` answers offline.

    ``clock`` judges a holder's ``valid_until`` and a document dated ahead; the gate gives the
    device's trusted time (never before its time floor): a clock set back revives no card."""

    def __init__(self, state_dir: Path, trusted, site: str, *, skew_s: float = 120.0, clock=time.time):
        self.path = Path(state_dir) / FILE
        self.trusted, self.site = trusted, site
        self._skew_s, self._clock = skew_s, clock
        self.doc: DirectoryDoc | None = None
        self._by_credential: dict[str, Holder] = {}
        self.problem: str | None = None

    def load(self) -> None:
        """The kept document, verified again; a bad file is a problem to report, never trusted."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._take(self._open(raw))
        except DocumentRejected as exc:
            self.problem = f"{self.path.name}: {exc}"

    def apply(self, raw: bytes) -> DirectoryDoc:
        """Verify a new document, keep it if newer, and use it; DocumentRejected says why not."""
        if len(raw) > MAX_BYTES:
            raise DocumentRejected("directory", "too_big", f"{len(raw)} bytes; at most {MAX_BYTES}")
        doc = self._open(raw)
        ahead = doc.issued_at.timestamp() - self._clock()
        if ahead > self._skew_s:
            # Newer means a later issued_at: one dated years ahead would refuse every real
            # directory after it (a signing key could freeze the gate's cards and PINs).
            raise DocumentRejected("directory", "not_yet_valid", f"issued_at {doc.issued_at.isoformat()} is "
                                   f"{ahead:.0f}s ahead of this device's clock (trust.clock_skew_s allows "
                                   f"{self._skew_s:g}s); check central's clock")
        if self.doc is not None and doc.issued_at <= self.doc.issued_at:
            raise DocumentRejected("directory", "not_newer", f"issued_at {doc.issued_at.isoformat()} is not "
                                   f"after the one in use ({self.doc.issued_at.isoformat()}): a replay?")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(raw)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._take(doc)
        self.problem = None
        return doc

    def _open(self, raw: bytes) -> DirectoryDoc:
        """Signature first (an unsigned document learns nothing), then the type, then the schema."""
        doc = open_signed(raw, self.trusted, None, "directory", site=self.site)
        if doc.get("type") != DOCUMENT_TYPE:
            raise DocumentRejected("directory", "wrong_type",
                                   f"a {doc.get('type')!r} document, expected {DOCUMENT_TYPE!r}")
        try:
            return DirectoryDoc.model_validate(doc)
        except ValidationError as exc:
            raise DocumentRejected("directory", "schema", str(exc.errors()[0]["msg"])[:300]) from None

    def _take(self, doc: DirectoryDoc) -> None:
        self.doc = doc
        self._by_credential = {c: h for h in doc.holders for c in h.credentials}

    def now(self) -> datetime:
        """The time holders are judged by (the daemon gives its trusted time as ``clock``)."""
        return datetime.fromtimestamp(self._clock(), UTC)

    def holder(self, credential: str, now: datetime) -> Holder | None:
        h = self._by_credential.get(credential)
        if h is None or (h.valid_until is not None and h.valid_until <= now):
            return None
        return h

    def summary(self) -> dict[str, Any]:
        return {"issued_at": self.doc.issued_at.isoformat() if self.doc else None,
                "holders": len(self.doc.holders) if self.doc else 0, "problem": self.problem}
