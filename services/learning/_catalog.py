"""The signed course catalog: validate, verify, keep the newest good one on disk.

Central publishes it retained on ``edge/v1/{site}/learning/catalog``. A
document is accepted only when it is signed by a trusted central key, is for
this site, is well formed (every item lists one sha256 per chunk) and is newer
than the one held; it then replaces the held one atomically (temp, fsync,
rename), so the tablet always works from the last catalog it verified.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from edge import signing
from edge._fs import atomic_write
from edge.errors import EdgeError
from edge.events import canonical_json
from edge.schema import ID, SHA256_HEX

MIN_CHUNK, MAX_CHUNK = 4 * 1024, 8 * 1024 * 1024
MAX_CATALOG_BYTES = 8 * 1024 * 1024  # refused unread above this: checked before JSON and signature
MAX_VALIDITY_DAYS = 400  # a catalog valid for longer is a mistake (or an attempt to outlive a key)
CLOCK_SKEW_S = 300


class CatalogRejected(EdgeError):
    """A catalog document was refused (bad signature, wrong site, malformed or not newer)."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Item(_M):
    """One file of a course, addressed by its sha256."""

    sha256: str = Field(pattern=SHA256_HEX)
    size: int = Field(ge=0)
    media_type: str = Field(pattern=r"^[\w.+-]+/[\w.+-]+$")
    name: str = Field(min_length=1, max_length=200)
    chunks: list[str] = Field(description="sha256 of each chunk, in order.")


class Course(_M):
    """A course: an id, a title, a version and its items."""

    id: str = Field(pattern=ID)
    title: str = Field(max_length=300)
    version: int = Field(ge=0)
    items: list[Item]


class Assignment(_M):
    """A course assigned to one device or to one resident (pseudonym); assigned items are pinned."""

    course: str = Field(pattern=ID)
    device: str | None = None
    resident: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Assignment:
        if (self.device is None) == (self.resident is None):
            raise ValueError("an assignment names exactly one of 'device' or 'resident'")
        return self


class Catalog(_M):
    """The signed course catalog of a site: courses, their items (with chunk hashes), assignments."""

    type: Literal["learning.catalog"]
    site: str
    version: int = Field(ge=1, description="Strictly increasing; a tablet ignores older or equal ones.")
    issued_at: AwareDatetime
    expires_at: AwareDatetime = Field(description="Signed; the tablet refuses the catalog after this.")
    chunk_size: int = Field(ge=MIN_CHUNK, le=MAX_CHUNK)
    courses: list[Course]
    assignments: list[Assignment] = Field(default_factory=list)
    signatures: list[dict[str, Any]]

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        ids = [c.id for c in self.courses]
        if len(ids) != len(set(ids)):
            raise ValueError("course ids must be unique")
        for course in self.courses:
            for item in course.items:
                want = max(1, -(-item.size // self.chunk_size))
                if len(item.chunks) != want or any(len(h) != 64 for h in item.chunks):
                    raise ValueError(f"course {course.id} item {item.name}: {len(item.chunks)} chunk "
                                     f"hashes for {item.size} bytes; expected {want}")
        known = set(ids)
        for a in self.assignments:
            if a.course not in known:
                raise ValueError(f"assignment names unknown course {a.course!r}")
        return self

    def items(self) -> dict[str, Item]:
        return {i.sha256: i for c in self.courses for i in c.items}

    def course(self, course_id: str) -> Course | None:
        return next((c for c in self.courses if c.id == course_id), None)

    def assigned(self, device: str, residents: set[str]) -> list[Assignment]:
        return [a for a in self.assignments if a.device == device or a.resident in residents]

    def pinned_hashes(self, device: str, residents: set[str]) -> set[str]:
        courses = {a.course for a in self.assigned(device, residents)}
        return {i.sha256 for c in self.courses if c.id in courses for i in c.items}


def parse_catalog(raw: bytes | dict, trusted: dict, site: str) -> Catalog:
    """Verify and validate one catalog document; raise CatalogRejected saying why."""
    try:
        catalog = signing.open_signed(raw, trusted, Catalog, "catalog", site=site, max_bytes=MAX_CATALOG_BYTES)
    except signing.DocumentRejected as exc:
        raise CatalogRejected(str(exc)) from None
    return catalog


def check_validity(catalog: Catalog, now: datetime | None = None) -> None:
    """Refuse a catalog outside its signed validity: expired, issued in the future, or too long-lived."""
    now = now or datetime.now(UTC)
    issued, expires = catalog.issued_at, catalog.expires_at
    if expires <= issued:
        raise CatalogRejected(f"catalog: expires_at {expires.isoformat()} is not after issued_at")
    if expires - issued > timedelta(days=MAX_VALIDITY_DAYS):
        raise CatalogRejected(f"catalog: valid for {(expires - issued).days} days; at most "
                              f"{MAX_VALIDITY_DAYS} are accepted")
    if now > expires:
        raise CatalogRejected(f"catalog: expired at {expires.isoformat()} (device clock {now.isoformat()})")
    if issued > now + timedelta(seconds=CLOCK_SKEW_S):
        raise CatalogRejected(f"catalog: issued_at {issued.isoformat()} is in the future "
                              f"(device clock {now.isoformat()}); check the clocks")


class CatalogKeeper:
    """Holds the last verified catalog; persists it so the tablet works offline after a restart."""

    def __init__(self, path: Path, trusted: dict, site: str, clock=time.time):
        self.path, self.trusted, self.site = Path(path), trusted, site
        self._clock = clock  # judges expiry: the daemon's trusted time, so a clock set back revives none
        self._lock = threading.Lock()
        self.current: Catalog | None = None
        self.load_problem = self.verify_held()

    def verify_held(self) -> str | None:
        """The kept catalog, checked against the trust store as it is now: at start and after each
        revocation. One that fails (keys rotated or revoked, file damaged) is dropped and set
        aside: no catalog and no version floor until central's next one. Returns why, or None."""
        with self._lock:
            if not self.path.exists():
                return None
            try:
                catalog = parse_catalog(self.path.read_bytes(), self.trusted, self.site)
            except CatalogRejected as exc:
                self.current = None
                self.path.replace(self.path.with_suffix(".dropped.json"))
                return str(exc)
            if self.current is None:
                self.current = catalog
            return None

    def offer(self, raw: bytes | dict) -> Catalog | None:
        """Accept a newer verified catalog (returned) or None if not newer; raise if bad."""
        catalog = parse_catalog(raw, self.trusted, self.site)
        check_validity(catalog, datetime.fromtimestamp(self._clock(), UTC))
        with self._lock:
            if self.current and catalog.version <= self.current.version:
                return None
            # The document as signed, not re-serialised: its signature must verify on reload.
            atomic_write(self.path, raw if isinstance(raw, bytes) else canonical_json(raw))
            self.current = catalog
        return catalog


