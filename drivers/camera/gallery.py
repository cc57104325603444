"""The face gallery: subjects, their templates and validity windows, encrypted at rest.

One SQLite file, ``state_dir/biometrics/gallery.db``, shared by the face
worker (reads, purges), the gallery sync component (writes what central
sends) and the ``edge biometrics`` CLI. Every template is sealed with AES-GCM
under a 256-bit key in ``state_dir/biometrics/gallery.key`` (mode 0600,
created on first use); the subject id is the associated data, so a template
moved to another subject's row no longer opens. Subject ids, roles and
windows are not biometric and stay readable for ``edge biometrics gallery``.

Templates are 128 float32 values (512 bytes, little-endian). This module
does not import numpy: the daemon process writes templates without it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge._fs import KeyFileError
from edge.atrest import AtRestCipher, NotAuthentic
from edge.errors import EdgeError
from edge.sqlite import open_db

DIMS = 128
TEMPLATE_BYTES = DIMS * 4
ROLES = ("visitor", "staff")
_AAD = b"edge-gallery-v1:"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('visitor', 'staff')),
    valid_from REAL,
    valid_until REAL,
    source TEXT NOT NULL CHECK (source IN ('central', 'local')),
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES subjects(subject_id) ON DELETE CASCADE,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_subject ON templates(subject_id);
-- Local enrollments at the gate: who, why, which templates (hash); reported to central as an
-- event and kept only while central's snapshots vouch for them (state pending -> confirmed,
-- or removed). The row outlives a removed subject: it is the record of what happened.
CREATE TABLE IF NOT EXISTS local_enrollments (
    subject_id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    operator TEXT NOT NULL,
    reason TEXT NOT NULL,
    template_sha256 TEXT NOT NULL,
    enrolled_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed', 'removed')),
    reported INTEGER NOT NULL DEFAULT 0,
    approved_by TEXT
);
"""
#: Columns added since a table was first made (CREATE TABLE IF NOT EXISTS leaves an old one as it is).
_ADDED_COLUMNS = {"local_enrollments": {"approved_by": "TEXT"}}


def templates_sha256(templates: list[bytes]) -> str:
    """The hash a local enrollment is reported and confirmed by (templates in order, concatenated)."""
    return hashlib.sha256(b"".join(templates)).hexdigest()


class GalleryError(EdgeError):
    """The gallery could not be read or written, or an entry is invalid."""


@dataclass
class Subject:
    """One enrolled person. ``templates`` are 512-byte float32 encodings (never logged)."""

    subject_id: str
    role: str
    templates: list[bytes] = field(default_factory=list, repr=False)
    valid_from: float | None = None  # unix seconds; None = no bound
    valid_until: float | None = None

    def validate(self) -> Subject:
        if not self.subject_id or len(self.subject_id) > 128:
            raise GalleryError(f"subject id {self.subject_id!r}: expected 1 to 128 characters")
        if self.role not in ROLES:
            raise GalleryError(f"subject {self.subject_id}: role {self.role!r}; expected visitor or staff")
        if not self.templates:
            raise GalleryError(f"subject {self.subject_id}: no templates; expected at least one encoding")
        for i, raw in enumerate(self.templates):
            check_template(raw, f"subject {self.subject_id} template {i}")
        if self.role == "visitor" and self.valid_until is None:
            # A visitor's template exists for one booked visit; without an end it would never be purged.
            raise GalleryError(f"subject {self.subject_id}: a visitor needs valid_until (end of the booked visit)")
        if self.valid_from is not None and self.valid_until is not None and self.valid_until <= self.valid_from:
            raise GalleryError(f"subject {self.subject_id}: valid_until is not after valid_from")
        return self

    def valid_at(self, now: float) -> bool:
        return ((self.valid_from is None or now >= self.valid_from)
                and (self.valid_until is None or now < self.valid_until))


def check_template(raw: bytes, where: str) -> None:
    if not isinstance(raw, bytes | bytearray) or len(raw) != TEMPLATE_BYTES:
        raise GalleryError(f"{where}: expected {TEMPLATE_BYTES} bytes (128 float32), got {len(raw)}")
    values = struct.unpack(f"<{DIMS}f", raw)
    if not all(math.isfinite(v) for v in values):
        raise GalleryError(f"{where}: contains NaN or infinity")
    norm = math.sqrt(sum(v * v for v in values))
    if not 0.1 < norm < 10.0:
        raise GalleryError(f"{where}: norm {norm:.3f} is not that of a face encoding")


def load_or_create_key(state_dir: Path, legacy: Path | None = None) -> bytes:
    """The gallery's AES-256 key, in the secrets folder (edge.secrets): created 0600 on first use,
    refused if others can read it, moved there from ``legacy`` (beside the gallery) once."""
    from edge import secrets

    try:
        return secrets.key(state_dir, "gallery.key", legacy=legacy)
    except KeyFileError as exc:
        raise GalleryError(str(exc)) from None


def _check_access(path: Path) -> None:
    """The gallery is the daemon's (biometrics/ is 0700): an operator's account is told which folder
    or file stops it and whose account to use, not shown a traceback or sqlite's 'readonly database'.
    Read and write even to look: every open sets the schema up, and WAL readers write its index."""
    from edge.access import refusal

    why = refusal(path, os.R_OK | os.W_OK, "the face gallery")
    if why:
        raise GalleryError(f"{why}; the gallery belongs to the daemon's account, which enrolls visitors and "
                           "reads the gallery (a staff enrolment needs only the control socket)")


class Gallery:
    """The encrypted gallery of one device. One instance per thread (SQLite connection)."""

    def __init__(self, state_dir: str | os.PathLike, *, readonly: bool = False):
        self.folder = Path(state_dir) / "biometrics"
        self.path = self.folder / "gallery.db"
        _check_access(self.path)
        if not readonly:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not self.path.exists():
            raise GalleryError(f"no gallery at {self.folder}; enroll someone or let central sync first")
        self._aead = AtRestCipher(load_or_create_key(Path(state_dir), self.folder / "gallery.key"))
        try:
            # secure_delete: revoked templates are overwritten, not left in free pages
            self._db = open_db(self.path, busy_timeout=10.0, secure_delete=True, foreign_keys=True)
            self._db.executescript(_SCHEMA)
            _add_columns(self._db)
        except sqlite3.Error as exc:
            raise GalleryError(f"{self.path}: cannot open the gallery database ({exc})") from None
        os.chmod(self.path, 0o600)

    def close(self) -> None:
        self._db.close()

    # -- sealing ---------------------------------------------------------------------------
    def _seal(self, subject_id: str, raw: bytes) -> bytes:
        return self._aead.seal(raw, _AAD + subject_id.encode())

    def _open(self, subject_id: str, sealed: bytes) -> bytes:
        try:
            return self._aead.open(sealed, _AAD + subject_id.encode())
        except NotAuthentic:
            raise GalleryError(f"template of subject {subject_id} does not decrypt: wrong key "
                               f"or tampered database ({self.path})") from None

    def seal_blob(self, data: bytes, context: bytes) -> bytes:
        """Encrypt other biometric data (audit crops) under the gallery key."""
        return self._aead.seal(data, _AAD + context)

    def open_blob(self, sealed: bytes, context: bytes) -> bytes:
        try:
            return self._aead.open(sealed, _AAD + context)
        except NotAuthentic:
            raise GalleryError("sealed blob does not decrypt: wrong key or tampered file") from None

    # -- writes ----------------------------------------------------------------------------
    def _tx(self):
        return _Transaction(self._db)

    def upsert(self, subject: Subject, *, source: str = "local", sync: tuple[int, int] | None = None) -> None:
        """Add or replace a subject and all its templates (atomically, with the sync version)."""
        subject.validate()
        with self._tx() as db:
            self._write_subject(db, subject, source)
            if sync:
                self._set_sync(db, *sync)

    def _write_subject(self, db, subject: Subject, source: str) -> None:
        db.execute("DELETE FROM subjects WHERE subject_id = ?", (subject.subject_id,))
        db.execute("INSERT INTO subjects VALUES (?, ?, ?, ?, ?, ?)",
                   (subject.subject_id, subject.role, subject.valid_from, subject.valid_until,
                    source, time.time()))
        db.executemany("INSERT INTO templates (subject_id, sealed) VALUES (?, ?)",
                       [(subject.subject_id, self._seal(subject.subject_id, t)) for t in subject.templates])

    def enroll_local(self, subject: Subject, operator: str, reason: str, *, approved_by: str | None = None) -> str:
        """Enroll at the gate, with its record (pending until a snapshot confirms it); returns the hash.

        Staff (a standing pass) only with ``approved_by``, a second operator other than ``operator``
        (drivers.camera.staff, after `edge cmd approve`)."""
        digest = templates_sha256(subject.validate().templates)
        if subject.role == "staff" and (not approved_by or approved_by == operator):
            raise GalleryError(f"subject {subject.subject_id}: a local staff enrolment needs a second operator "
                               "(edge biometrics enroll --role staff, then `edge cmd approve` by another account)")
        with self._tx() as db:
            held = db.execute("SELECT role, source FROM subjects WHERE subject_id = ?",
                              (subject.subject_id,)).fetchone()
            # One operator may redo their own visitor enrolment (a bad photo at reception), never
            # replace central's subject or a staff face: that would swap a booked visitor's face
            # for an accomplice's, or turn a member of staff into a visitor.
            if held is not None and not approved_by and (held[1] != "local" or held[0] == "staff"):
                who = "central's" if held[1] != "local" else "a local"
                raise GalleryError(f"subject {subject.subject_id} is already enrolled ({who} {held[0]}); one "
                                   "operator's enrolment never replaces it: enroll under a new subject id, or "
                                   "have central update it")
            self._write_subject(db, subject, "local")
            db.execute("INSERT OR REPLACE INTO local_enrollments (subject_id, role, operator, reason,"
                       " template_sha256, enrolled_at, approved_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (subject.subject_id, subject.role, operator, reason, digest, time.time(), approved_by))
        return digest

    def unreported_enrollments(self) -> list[dict[str, Any]]:
        keys = ("subject_id", "role", "operator", "approved_by", "reason", "template_sha256", "enrolled_at")
        rows = self._db.execute(f"SELECT {', '.join(keys)} FROM local_enrollments WHERE reported = 0 "
                                "ORDER BY enrolled_at").fetchall()
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def mark_reported(self, subject_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE local_enrollments SET reported = 1 WHERE subject_id = ?", (subject_id,))

    def settle_local(self, vouched: dict[str, str], issued_at: float) -> list[tuple[str, str]]:
        """After a snapshot: a local enrollment made before it stays only if the snapshot vouches for
        it (same subject, same template hash); otherwise it is removed. Returns (subject, outcome)."""
        out = []
        with self._tx() as db:
            rows = db.execute("SELECT subject_id, template_sha256, state FROM local_enrollments "
                              "WHERE state != 'removed' AND enrolled_at <= ?", (issued_at,)).fetchall()
            for sid, digest, state in rows:
                if vouched.get(sid) == digest:
                    if state == "pending":
                        db.execute("UPDATE local_enrollments SET state = 'confirmed' WHERE subject_id = ?", (sid,))
                        out.append((sid, "confirmed"))
                    continue
                db.execute("DELETE FROM subjects WHERE subject_id = ? AND source = 'local'", (sid,))
                db.execute("UPDATE local_enrollments SET state = 'removed' WHERE subject_id = ?", (sid,))
                out.append((sid, "removed"))
        return out

    def revoke(self, subject_id: str, *, sync: tuple[int, int] | None = None) -> bool:
        """Remove a subject and its templates; True if it was there."""
        with self._tx() as db:
            gone = db.execute("DELETE FROM subjects WHERE subject_id = ?", (subject_id,)).rowcount > 0
            if sync:
                self._set_sync(db, *sync)
        return gone

    def replace_central(self, subjects: Iterable[Subject], epoch: int, version: int) -> int:
        """Apply a snapshot: central's subjects become exactly these; local enrollments stay
        (``settle_local`` then keeps only those the snapshot vouches for)."""
        subjects = [s.validate() for s in subjects]
        with self._tx() as db:
            db.execute("DELETE FROM subjects WHERE source = 'central'")
            for s in subjects:
                self._write_subject(db, s, "central")
            self._set_sync(db, epoch, version)
        return len(subjects)

    def purge_expired(self, now: float | None = None, grace_s: float = 3600.0) -> int:
        """Delete subjects whose window ended more than ``grace_s`` ago; returns how many."""
        cutoff = (now or time.time()) - grace_s
        with self._tx() as db:
            return db.execute("DELETE FROM subjects WHERE valid_until IS NOT NULL AND valid_until < ?",
                              (cutoff,)).rowcount

    # -- sync state ------------------------------------------------------------------------
    @staticmethod
    def _set_sync(db, epoch: int, version: int) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                       [("epoch", str(epoch)), ("version", str(version)), ("synced_at", str(time.time()))])

    def sync_state(self) -> dict[str, Any]:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        return {"epoch": int(meta.get("epoch", 0)), "version": int(meta.get("version", 0)),
                "synced_at": float(meta["synced_at"]) if "synced_at" in meta else None}

    # -- reads -----------------------------------------------------------------------------
    def change_token(self) -> tuple[int, int]:
        """Changes whenever any connection commits: compare before each decision."""
        data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        return data_version, self._db.total_changes

    def subjects(self, role: str | None = None) -> list[Subject]:
        """Every subject (of ``role``) with its decrypted templates, grouped and ordered by subject."""
        rows = self._db.execute(
            "SELECT s.subject_id, s.role, s.valid_from, s.valid_until, t.sealed FROM subjects s "
            "JOIN templates t ON t.subject_id = s.subject_id WHERE ? IS NULL OR s.role = ? "
            "ORDER BY s.subject_id, t.id", (role, role)).fetchall()
        out: list[Subject] = []
        for sid, role, vf, vu, sealed in rows:
            if not out or out[-1].subject_id != sid:
                out.append(Subject(sid, role, [], vf, vu))
            out[-1].templates.append(self._open(sid, sealed))
        return out

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Counts and versions only: never a template."""
        now = now or time.time()
        db = self._db
        by_role = dict(db.execute("SELECT role, count(*) FROM subjects GROUP BY role").fetchall())
        by_source = dict(db.execute("SELECT source, count(*) FROM subjects GROUP BY source").fetchall())
        expired = db.execute("SELECT count(*) FROM subjects WHERE valid_until IS NOT NULL AND valid_until <= ?",
                             (now,)).fetchone()[0]
        pending = db.execute("SELECT count(*) FROM subjects WHERE valid_from IS NOT NULL AND valid_from > ?",
                             (now,)).fetchone()[0]
        templates = db.execute("SELECT count(*) FROM templates").fetchone()[0]
        return {"subjects": sum(by_role.values()), "staff": by_role.get("staff", 0),
                "visitors": by_role.get("visitor", 0), "templates": templates,
                "central": by_source.get("central", 0), "local": by_source.get("local", 0),
                "expired_not_purged": expired, "not_yet_valid": pending, **self.sync_state()}


def _add_columns(db: sqlite3.Connection) -> None:
    """A gallery made by an older version gets the columns added since (nothing else changes)."""
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for column, decl in columns.items():
            if column not in have:
                try:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                except sqlite3.OperationalError as exc:  # another process (worker, CLI) added it first
                    if "duplicate column" not in str(exc):
                        raise


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error, sqlite errors turned into ours."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise GalleryError(f"gallery is busy or unwritable ({exc})") from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as err:
                self.db.execute("ROLLBACK")
                raise GalleryError(f"gallery write failed ({err})") from None
        self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise GalleryError(f"gallery write failed ({exc})") from None
        return False
