"""The trust store: which key may sign which document, now.

One question, asked the same way by every subsystem: *may these signatures
open a document of this type?* ``check`` answers it for a whole document
(commands); ``keys_for`` gives the keys of one role as a live mapping for
``edge.signing.open_signed`` (catalogs, galleries, directories, configs,
updates). Both consult the revocation list and key expiry at each call, so a
revocation applies at once, to documents already queued too.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.signing import SignatureError, signed_bytes
from edge.trust._anchors import ROLES, Anchor

log = structlog.get_logger("edge.trust")

#: Document type -> the role its signers must hold. Other subsystems add their types here.
DOCUMENT_ROLES: dict[str, str] = {
    "command": "command",
    "catalog": "catalog",
    "gallery": "gallery",
    "directory": "directory",
    "contacts": "directory",
    "messaging": "directory",  # contacts, message statuses and inbound messages for a tablet
    "config": "config",
    "update": "update",
    "revocations": "config",
    "dose_records": "directory",  # other sites' x-ray doses: records about people, like the directory
}


class TrustRefused(EdgeError):
    """Signatures do not authorise a document; ``problem`` is a refusal code.

    bad_signature | wrong_role | revoked_key | under_signed
    """

    def __init__(self, problem: str, detail: str):
        super().__init__(f"{problem}: {detail}")
        self.problem, self.detail = problem, detail


def role_for(doc_type: str) -> str:
    """The role a document type needs; KeyError for a type nobody declared (a programming error)."""
    try:
        return DOCUMENT_ROLES[doc_type]
    except KeyError:
        raise KeyError(f"document type {doc_type!r} has no role; add it to edge.trust.DOCUMENT_ROLES") from None


class TrustStore:
    """The device's trust anchors, their roles, expiry and the revocation list."""

    def __init__(self, anchors: Mapping[str, Anchor], revocations_path: Path | None = None,
                 clock=time.time):
        self.anchors = dict(anchors)
        self.revocations_path = revocations_path
        self._clock = clock
        self._lock = threading.Lock()
        self._revoked: frozenset[str] = frozenset()
        self._serial = 0
        self._stamp: tuple | None = None
        self._listeners: list[Callable[[], None]] = []
        self._reload()

    # -- revocation list --------------------------------------------------------------

    @property
    def serial(self) -> int:
        self._reload()
        return self._serial

    def revoked(self) -> frozenset[str]:
        """Fingerprints revoked so far (re-read when another process updated the file)."""
        self._reload()
        return self._revoked

    def _reload(self) -> None:
        path = self.revocations_path
        if path is None:
            return
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        with self._lock:
            try:
                doc = json.loads(path.read_bytes())
            except (OSError, ValueError):
                return  # a torn read cannot happen (atomic replace); keep what we had
            self._set(doc)
            self._stamp = stamp

    def _set(self, doc: Mapping[str, Any]) -> None:
        self._serial = int(doc.get("serial", 0))
        self._revoked = frozenset(e["fingerprint"] for e in doc.get("revoked", []))

    def on_revocations(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after each installed list that revokes a key not revoked before.

        For holders of signed documents: a document kept (and its version kept as the floor)
        since before the revocation is judged again. Runs on the installing thread (the network
        thread), before the list's event is recorded: a listener that needs more than a signature
        check queues the work.
        """
        self._listeners.append(listener)

    def install_revocations(self, doc: Mapping[str, Any]) -> None:
        """Adopt an already verified list (see edge.trust.revocation), persist it atomically, and
        tell the listeners (``on_revocations``) when it revokes a key not revoked before."""
        with self._lock:
            before = self._revoked
            self._set(doc)
            if self.revocations_path is not None:
                self.revocations_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.revocations_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(dict(doc)))
                tmp.replace(self.revocations_path)
                st = self.revocations_path.stat()
                self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            added = self._revoked - before
        if added:
            self._tell_listeners()

    def _tell_listeners(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception as exc:  # one holder's bug must not keep the others on a revoked document
                log.exception("trust_revocation_listener_failed", listener=getattr(listener, "__qualname__", "?"),
                              error=str(exc)[:300])

    # -- the role check -----------------------------------------------------------------

    def refusal(self, kid: str, doc_type: str, now: float | None = None) -> tuple[str, str] | None:
        """None when key ``kid`` may sign ``doc_type`` at ``now`` (default: the wall clock), else
        (problem, detail)."""
        role = role_for(doc_type)
        anchor = self.anchors.get(kid)
        if anchor is None:
            return "bad_signature", f"key {kid!r} is not trusted by this device"
        if anchor.fingerprint in self.revoked():
            return "revoked_key", f"key {kid} ({anchor.path}) was revoked"
        if anchor.expires is not None and (self._clock() if now is None else now) > anchor.expires.timestamp():
            return "bad_signature", f"key {kid} ({anchor.path}) expired at {anchor.expires.isoformat()}"
        if role not in anchor.roles:
            return "wrong_role", (f"key {kid} ({anchor.path}) holds role(s) {', '.join(sorted(anchor.roles))}, "
                                  f"not {role!r} which a {doc_type} needs")
        return None

    def keys_for(self, doc_type: str) -> RoleKeys:
        """The keys that may sign ``doc_type``, as a live ``key_id -> key`` mapping for open_signed."""
        role_for(doc_type)
        return RoleKeys(self, doc_type)

    def check(self, doc: Mapping[str, Any], doc_type: str, required: int = 1, *,
              now: float | None = None) -> list[str]:
        """Key ids of the distinct valid signers of ``doc`` allowed to sign ``doc_type``.

        Raises TrustRefused when fewer than ``required``. A signature by a trusted
        key that does not verify refuses the whole document (its signatures cover
        different contents); signatures by keys this device does not know are ignored.
        ``now`` judges key expiry (commands pass their time floor: a clock set back
        revives no expired key); default the wall clock.
        """
        signatures = doc.get("signatures")
        if not signatures or not isinstance(signatures, list):
            raise TrustRefused("bad_signature", "not signed (no 'signatures' list)")
        try:
            payload = signed_bytes(doc)
        except SignatureError as exc:  # NaN, Infinity, a lone surrogate: nobody signed this
            raise TrustRefused("bad_signature", str(exc)) from None
        good: list[str] = []
        refused: list[tuple[str, str]] = []
        for entry in signatures:
            kid = entry.get("key_id") if isinstance(entry, dict) else None
            anchor = self.anchors.get(kid) if isinstance(kid, str) else None
            if anchor is None:
                refused.append(("bad_signature", f"key {kid!r} is not trusted by this device"))
                continue
            if not _valid(anchor, entry.get("sig"), payload):
                raise TrustRefused("bad_signature", f"the signature of key {kid} does not match this "
                                   "content (signed different contents, or altered after signing)")
            why = self.refusal(kid, doc_type, now)
            if why is not None:
                refused.append(why)
            elif kid not in good:
                good.append(kid)
        if len(good) >= required:
            return good
        raise _shortfall(good, refused, required, doc_type)


def _shortfall(good: list[str], refused: list[tuple[str, str]], required: int, doc_type: str) -> TrustRefused:
    notes = "; ".join(d for _, d in refused)
    problems = [p for p, _ in refused]
    if good and "revoked_key" not in problems:
        return TrustRefused("under_signed", f"needs {required} signatures from distinct keys holding role "
                            f"{role_for(doc_type)!r} (two-person rule), has {len(good)}"
                            + (f" ({notes})" if notes else ""))
    for problem in ("revoked_key", "wrong_role"):
        if problem in problems:
            return TrustRefused(problem, notes)
    return TrustRefused("bad_signature", notes or "no valid signature")


def _valid(anchor: Anchor, sig: Any, payload: bytes) -> bool:
    from edge.signing import signature_errors

    try:
        anchor.key.verify(base64.b64decode(sig if isinstance(sig, str) else "", validate=True), payload)
    except (*signature_errors(), binascii.Error):
        return False
    return True


class RoleKeys(Mapping):
    """``key_id -> key`` of the keys that may sign one document type, judged at each lookup."""

    def __init__(self, store: TrustStore, doc_type: str):
        self._store, self.doc_type = store, doc_type

    def __getitem__(self, kid: str):
        if self._store.refusal(kid, self.doc_type) is not None:
            raise KeyError(kid)
        return self._store.anchors[kid].key

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._store.anchors if self._store.refusal(k, self.doc_type) is None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def store_for_keys(keys: Mapping[str, Any], roles=ROLES, clock=time.time) -> TrustStore:
    """A store trusting ``key_id -> public key`` with ``roles`` each: for tests and tools."""
    import hashlib

    from edge.signing import TrustedKey, _raw

    anchors = {}
    for kid, key in keys.items():
        raw = _raw(key)
        anchors[kid] = Anchor(kid, hashlib.sha256(raw).hexdigest(), f"<key {kid}>", frozenset(roles), None,
                              TrustedKey(raw))
    return TrustStore(anchors, clock=clock)

