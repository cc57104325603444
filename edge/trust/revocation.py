"""The signed revocation list: central publishes it retained; the device applies it at once.

Topic ``edge/v1/{site}/trust/revocations`` (retained, QoS 1)::

    {"type": "trust.revocations", "site": "hmp-example", "serial": 7,
     "issued_at": "2026-12-07T06:00:00Z",
     "revoked": [{"fingerprint": "<64 hex: SHA-256 of the raw public key>", "reason": "laptop stolen"}],
     "signatures": [...]}

Signed by a key holding role ``config`` (one signature: revoking only ever
tightens). ``serial`` grows; revocations are never undone by a later list: the
device keeps the union. So a list with a lower serial can only add: its new
revocations are applied (the serial stays), and one that adds nothing is
refused as a rollback. Otherwise one list with a huge serial would stop every
later list. Applied on the network thread before any queued
command is verified, persisted in ``state_dir/trust/revocations.json``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import structlog

from edge.errors import EdgeError
from edge.schema import SHA256_HEX
from edge.trust._store import TrustRefused, TrustStore

log = structlog.get_logger("edge.trust")
SOURCE = "trust"
_FINGERPRINT = re.compile(SHA256_HEX)


class RevocationRejected(EdgeError):
    """A revocation list was refused; nothing changed."""


def topic(site: str) -> str:
    from edge.mqtt.topics import site_prefix

    return f"{site_prefix(site)}/trust/revocations"


def apply_revocations(store: TrustStore, raw: bytes | str, site: str) -> dict[str, Any]:
    """Verify and adopt one list; returns what changed. RevocationRejected says why not."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RevocationRejected(f"revocation list: not JSON ({str(exc)[:100]})") from None
    if not isinstance(doc, dict):
        raise RevocationRejected("revocation list: expected a JSON object")
    try:
        signers = store.check(doc, "revocations")
    except TrustRefused as exc:
        raise RevocationRejected(f"revocation list: {exc}") from None
    if doc.get("type") != "trust.revocations" or doc.get("site") != site:
        raise RevocationRejected(f"revocation list: type must be 'trust.revocations' for site {site!r}, "
                                 f"got {doc.get('type')!r} for {doc.get('site')!r}")
    serial, entries = doc.get("serial"), doc.get("revoked")
    if not isinstance(serial, int) or isinstance(serial, bool) or not isinstance(entries, list):
        raise RevocationRejected("revocation list: needs an integer 'serial' and a 'revoked' list")
    bad = [e for e in entries if not isinstance(e, dict) or not _FINGERPRINT.fullmatch(str(e.get("fingerprint")))]
    if bad:
        raise RevocationRejected("revocation list: every entry needs a 'fingerprint' of 64 lower-case hex "
                                 "digits (SHA-256 of the raw public key, as `edge keys` shows)")
    current = store.serial
    before = store.revoked()
    if serial < current:
        # The device keeps the union of every list, so an older serial can undo nothing; refusing
        # its new revocations would let one list with a huge serial (one config key) stop every
        # later one. An older list that adds nothing is the rollback it looks like.
        if not {e["fingerprint"] for e in entries} - before:
            raise RevocationRejected(f"revocation list: refused as a rollback: serial {_short(serial)} is "
                                     f"below the applied {_short(current)} and revokes nothing new")
        serial = current
    elif serial == current:
        return {"serial": serial, "added": [], "unchanged": True}
    merged = {e["fingerprint"]: e.get("reason") for e in entries}
    for fp in before - merged.keys():
        merged[fp] = "kept from an earlier list"  # a revocation is never undone
    kept = {"type": "trust.revocations", "site": site, "serial": serial, "issued_at": doc.get("issued_at"),
            "signed_by": signers,
            "revoked": [{"fingerprint": fp, "reason": r} for fp, r in sorted(merged.items())]}
    store.install_revocations(kept)
    added = sorted(set(merged) - before)
    hit = [a.key_id for a in store.anchors.values() if a.fingerprint in added]
    return {"serial": serial, "added": added, "trusted_keys_revoked": hit, "unchanged": False}


def _short(serial: int) -> str:
    text = str(serial)
    return text if len(text) <= 20 else f"{text[:8]}... ({len(text)} digits)"


class RevocationListener:
    """Daemon component ``trust``: applies the retained revocation list as it arrives."""

    name = "trust"

    def __init__(self, daemon, store: TrustStore):
        self._daemon, self.store = daemon, store
        self.site = daemon.settings.site
        self.counts = {"applied": 0, "rejected": 0}
        if daemon.link is not None:
            daemon.link.subscribe(topic(self.site), self._on_message, qos=1)

    def start(self) -> None:
        log.info("trust_ready", keys=len(self.store.anchors), revocation_serial=self.store.serial,
                 revoked=len(self.store.revoked()))

    def stop(self) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"status": "ok", "keys": len(self.store.anchors), "revocation_serial": self.store.serial,
                "revoked": len(self.store.revoked()), **self.counts}

    def _on_message(self, topic_name: str, payload: bytes, props=None) -> None:
        """Paho's thread: one signature check and a small file write, then commands see it."""
        if not payload:
            return  # a cleared retained message revokes nothing and un-revokes nothing
        try:
            outcome = apply_revocations(self.store, payload, self.site)
        except RevocationRejected as exc:
            self.counts["rejected"] += 1
            log.error("trust_revocations_rejected", topic=topic_name, error=str(exc)[:300])
            self._emit("trust.revocations_rejected", {"topic": topic_name, "reason": str(exc)[:300]}, "alarm")
            return
        if outcome["unchanged"]:
            return
        self.counts["applied"] += 1
        log.warning("trust_revocations_applied", serial=outcome["serial"], added=outcome["added"],
                    trusted_keys_revoked=outcome["trusted_keys_revoked"])
        self._emit("trust.revocations_applied", outcome, "alarm" if outcome["trusted_keys_revoked"] else "normal")

    def _emit(self, type: str, payload: dict, priority: str) -> None:
        try:
            self._daemon.emit(type, payload, priority, SOURCE)
        except EdgeError as exc:
            log.error("trust_event_not_recorded", type=type, error=str(exc))
