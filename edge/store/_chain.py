"""The tamper-evident audit chain.

Each event's hash is ``sha256(previous hash || canonical bytes)``. The head of
the chain and every checkpoint (where purged history is folded away) carry an
HMAC made with the device's audit key, so a row that is edited, deleted or
appended behind the store's back breaks the walk at a named place.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from dataclasses import dataclass
from pathlib import Path

GENESIS = bytes(32)
_LAST = "last"  # drop runs (schema v3); older stores have single drop records only


def _has_last(conn: sqlite3.Connection) -> bool:
    return any(row[1] == _LAST for row in conn.execute("PRAGMA table_info(dropped)"))


def chain_hash(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


def load_key(state_dir: Path, legacy: Path | None = None) -> bytes:
    """The audit key, in the secrets folder (edge.secrets); created (0600) on first use."""
    from edge import secrets

    return secrets.key(state_dir, "audit.key", legacy=legacy)


def mac(key: bytes, label: bytes, seq: int, digest: bytes) -> bytes:
    return hmac.new(key, label + seq.to_bytes(8, "big") + digest, hashlib.sha256).digest()


def drop_label(reason: str, first: int, last: int | None) -> tuple[bytes, int]:
    """(MAC label, MAC seq) of a drop record: a run is signed over its first and last seq."""
    if last is None or last == first:
        return reason.encode(), first
    return f"{reason}:{first}".encode(), last


def _signed(key: bytes, label: bytes, seq, digest, tag) -> bool:
    """Does ``tag`` sign (seq, digest)? False, not an exception, when someone changed a
    column's storage type (sqlite's replace() turns a BLOB into TEXT)."""
    if not (isinstance(seq, int) and isinstance(digest, bytes) and isinstance(tag, bytes)):
        return False
    return hmac.compare_digest(tag, mac(key, label, seq, digest))


@dataclass
class VerifyReport:
    ok: bool
    checked: int
    first_seq: int | None
    last_seq: int | None
    problem: str | None = None
    break_seq: int | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def verify(conn: sqlite3.Connection, key: bytes, progress=None) -> VerifyReport:
    """Walk the chain from the newest checkpoint to the head; report the first break."""
    ckpt = conn.execute("SELECT seq, hash, mac FROM checkpoints ORDER BY seq DESC LIMIT 1").fetchone()
    if ckpt is None:
        prev, expected = GENESIS, 1
    else:
        if not _signed(key, b"ckpt", *ckpt):
            return VerifyReport(False, 0, None, None, f"checkpoint at seq {ckpt[0]} has a bad signature", ckpt[0])
        prev, expected = ckpt[1], ckpt[0] + 1
    first = expected
    dropped = {
        row[0]: row[1:]
        for row in conn.execute(f"SELECT seq, hash, reason, mac, {_LAST} FROM dropped "
                                "WHERE COALESCE(last, seq) >= ?", (expected,))
    } if _has_last(conn) else {
        row[0]: (*row[1:], None)
        for row in conn.execute("SELECT seq, hash, reason, mac FROM dropped WHERE seq >= ?", (expected,))
    }
    checked = 0
    rows = conn.execute("SELECT seq, body, hash FROM events WHERE seq >= ? ORDER BY seq", (expected,))

    def fail(problem: str, seq: int) -> VerifyReport:
        return VerifyReport(False, checked, first, expected - 1, problem, seq)

    def skip_dropped_until(limit: int) -> VerifyReport | None:
        nonlocal prev, expected
        while expected < limit and expected in dropped:
            digest, reason, tag, last = dropped.pop(expected)
            if not isinstance(reason, str) or not (isinstance(last, int) or last is None):
                return fail(f"seq {expected}: drop record has a bad signature", expected)
            label, tag_seq = drop_label(reason, expected, last)
            if not _signed(key, label, tag_seq, digest, tag):
                return fail(f"seq {expected}: drop record has a bad signature", expected)
            prev, expected = digest, (last or expected) + 1
        return None

    for seq, body, digest in rows:
        if (bad := skip_dropped_until(seq)) is not None:
            return bad
        if seq != expected:
            return fail(f"seq {expected} is missing (row deleted?)", expected)
        if (not isinstance(body, bytes) or chain_hash(prev, body) != digest
                or f'"seq":{seq},'.encode() not in body):
            return fail(f"seq {seq}: contents do not match the chain (row edited?)", seq)
        prev, expected, checked = digest, seq + 1, checked + 1
        if progress and checked % 10_000 == 0:
            progress(checked)
    if (bad := skip_dropped_until(2**63)) is not None:
        return bad
    head = dict(conn.execute("SELECT key, value FROM meta WHERE key LIKE 'head_%'").fetchall())
    if not head:
        # Only a store that never committed an event has no signed head; deleting the head
        # to hide removed rows must not pass.
        next_seq = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        if checked or expected != first or (next_seq and next_seq[0] != expected):
            return fail("the signed chain head is missing (meta edited?)", expected - 1)
    else:
        head_seq, head_hash, head_mac = head.get("head_seq"), head.get("head_hash"), head.get("head_mac")
        if not _signed(key, b"head", head_seq, head_hash, head_mac):
            return fail("the chain head has a bad signature (meta edited?)", head_seq)
        if head_seq != expected - 1 or head_hash != prev:
            return fail(f"chain ends at seq {expected - 1} but the signed head is seq {head_seq} "
                        "(newest rows deleted or added?)", expected)
    return VerifyReport(True, checked, first, expected - 1)
